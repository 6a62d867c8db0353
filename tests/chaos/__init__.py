"""Tests of the chaos suite (``loadtest.chaos``): its parts, a short seeded run, a broken build."""
