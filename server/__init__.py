"""Stateless aiohttp services: the operator API, the voter API and the public read API."""
