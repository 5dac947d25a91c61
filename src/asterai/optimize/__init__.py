"""The strategy search (``asterai optimize``): Optuna over the walk-forward, a final
window no trial sees, the deflated Sharpe ratio and the probability of backtest
overfitting. ``run.run_optimize(settings)`` is the entry point; ``space`` the searched
parameters, ``workspace`` what a worker loads once, ``trial`` one evaluation, ``study``
the storage and the workers, ``stats`` the two statistics, ``report`` the page."""
