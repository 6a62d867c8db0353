"""Tests of the trustee command line."""
