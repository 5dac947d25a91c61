"""Talking to Aster: REST client, weight-aware limiter, errors and the replay server."""
