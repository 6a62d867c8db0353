"""The test suite (a package, so tests/batcher and tests/server do not shadow the real packages)."""
