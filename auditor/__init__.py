"""Auditor tools: verify receipts, follow the public log and verify an election record.

Depends only on the pure core (:mod:`referendum_core`) and an HTTP client.
"""
