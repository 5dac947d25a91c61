"""The backtest: out-of-sample predictions through a portfolio simulation with full costs.

Work in progress (issue 10): the simulation kernel and its frame-facing wrapper exist;
metrics, baselines, the report and the command come next.
"""
