"""Queries more than one service runs (the server reads what the batcher writes)."""
