"""Paper trading: the models' signals on a simulated account against the live market,
with the backtest's own per-bar step (``backtest.kernel.step_nb``)."""
