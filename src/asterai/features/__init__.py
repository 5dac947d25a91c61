"""Confluence features: per-asset indicators, cross-asset confluence, regimes, higher
timeframes and labels, built causally from verified data only."""
