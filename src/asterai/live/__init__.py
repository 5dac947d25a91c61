"""Live trading on Aster: the paper trader's loop with signed orders (issue 35, in
progress): orders journaled as intents before they are sent (``intents``)."""
