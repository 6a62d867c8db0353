"""Locust scenarios, the load runner, the capacity model and its report.

Never imported by :mod:`server` or :mod:`batcher`.
"""
