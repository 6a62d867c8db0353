"""The ``referendum`` command line: the composition root of every part's commands.

Subcommands are registered by dotted path and imported only when used, so ``referendum
--help`` stays fast and each part of the product owns its own command module.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["COMMANDS", "LazyGroup", "main"]

# name -> "module:attribute" of a click.Command. Each module owns its command.
COMMANDS: dict[str, str] = {
    "serve": "server.commands:serve",
    "migrate": "server.commands:migrate",
    "create-api-key": "server.commands:create_api_key",
    "demo": "loadtest.demo:demo",
    "batcher": "batcher.commands:batcher",
    "bench": "bench.commands:bench",
    "trustee": "trustee.cli:trustee",
    "audit": "auditor.cli:main",
    "loadtest": "loadtest.commands:loadtest",
    "record": "server.record_commands:record",
    "tally-follow": "batcher.commands:tally_follow",
    "node": "node.commands:node",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attr = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="referendum")
def main() -> None:
    """Verifiable referendum backend: servers, batcher, trustee and auditor tools, benchmarks."""
