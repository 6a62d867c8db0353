"""The HTTP API, one module per audience; each exposes ``setup(app)`` adding its routes.

Handlers parse (:mod:`server.http`), call the domain or a store function, and serialise.
"""
