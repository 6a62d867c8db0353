"""Tests of the batcher (helpers shared with the read-API tests: :mod:`tests.batcher.logs`)."""
