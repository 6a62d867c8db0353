"""What every service process shares: settings, keys, logging, the database layer, migrations.

Below both services (``server``, ``batcher``) and above the pure core (``referendum_core``):
it imports the core and never ``server``, ``batcher``, ``loadtest`` or ``bench``.
"""
