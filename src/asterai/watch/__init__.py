"""Watching the accounts: the dashboard and its REST API, Prometheus metrics, alerts."""
