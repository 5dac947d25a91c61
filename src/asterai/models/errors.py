"""The training step's errors, below every module of the package."""


class TrainingError(ValueError):
    """Training cannot go on; the message names the setting or file to change."""
