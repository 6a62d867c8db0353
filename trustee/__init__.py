"""Trustee tools: create a key share, publish commitments, check the others', decrypt a share."""
