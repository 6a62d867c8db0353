"""Fuzzing: schemathesis against the served OpenAPI document, and a corpus of malformed ballots."""
