"""The ``ccc-guard`` console entry point: Faust's own CLI with ccc-guard's subcommands beside it.

``ccc-guard worker`` starts a worker; ``ccc-guard topics`` creates missing topics and prints the
catalogue; ``ccc-guard demo`` runs the whole thing locally (broker, worker, demo feed);
``ccc-guard explain`` and ``ccc-guard claimers`` ask a worker's query API (plain argparse, not
Faust's CLI: they start no app and exit 0/1/2 as ``streams/query_cli.py`` says).
"""

from __future__ import annotations

import os
import sys

from streams import query_cli
from streams.app import GuardApp, create_app
from streams.commands import register_commands
from streams.errors import ConfigError
from streams.settings import Settings


def _app_or_exit() -> tuple[Settings, GuardApp]:
    try:
        settings = Settings.from_env(os.environ)
        # The topology lives on through the agents and timers it registers on the app.
        app, _topology = create_app(settings)
    except ConfigError as exc:
        print(f"ccc-guard: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings, app


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] and argv[0] in query_cli.COMMANDS:
        # A person's question needs a URL and a token, not a worker's whole configuration.
        raise SystemExit(query_cli.main(argv, os.environ))
    settings, app = _app_or_exit()
    register_commands(app)
    if argv[:1] == ["worker"] and not any(
        a in {"-l", "--loglevel"} or a.startswith("--loglevel=") for a in argv
    ):
        sys.argv[2:2] = ["-l", settings.log_level]
    app.main()


if __name__ == "__main__":
    main()
