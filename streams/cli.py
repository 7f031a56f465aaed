"""The ``ccc-guard`` console entry point: Faust's own CLI with ccc-guard's subcommands beside it.

``ccc-guard worker`` starts a worker; ``ccc-guard topics`` creates missing topics and prints the
catalogue; ``ccc-guard demo`` runs the whole thing locally (broker, worker, demo feed).
"""

from __future__ import annotations

import os
import sys

from streams.app import create_app
from streams.commands import register_commands
from streams.errors import ConfigError
from streams.settings import Settings


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"ccc-guard: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


settings = _settings_or_exit()
app, topology = create_app(settings)
register_commands(app)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["worker"] and not any(
        a in {"-l", "--loglevel"} or a.startswith("--loglevel=") for a in argv
    ):
        sys.argv[2:2] = ["-l", settings.log_level]
    app.main()


if __name__ == "__main__":
    main()
