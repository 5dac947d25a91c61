"""AsterAI: real Aster DEX data in, honest confluence models and backtests out."""

__version__ = "0.1.0"
