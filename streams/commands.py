"""ccc-guard's own subcommands, beside Faust's ``worker``."""

from __future__ import annotations

from faust.cli import AppCommand, option

from streams.app import GuardApp
from topics.acls import worker_grants
from topics.admin import config_drift, ensure_topics


def register_commands(app: GuardApp) -> None:
    @app.command()
    async def topics(self: AppCommand) -> None:
        """Create missing topics, then list the catalogue and any drift from it."""
        connection, specs = app.kafka_connection, app.catalogue.all()
        created = await ensure_topics(connection, specs)
        drift = await config_drift(connection, specs)
        for spec in specs:
            mark = "created" if spec.name in created else "exists"
            print(f"{spec.name:45} {spec.partitions:3} partitions  key={spec.key:28} {mark}")
            for difference in drift.get(spec.name, []):
                print(f"    DRIFT: {difference}")

    @app.command(
        option(
            "--duration",
            type=float,
            default=0.0,
            help="Stop after this many seconds (0: run until Ctrl-C).",
        ),
        option("--rate", type=float, default=20.0, help="Listing events per second."),
        option("--seed", type=int, default=7, help="Seed of the synthetic data."),
    )
    async def demo(self: AppCommand, duration: float, rate: float, seed: int) -> None:
        """Local broker + worker + a synthetic feed, printing verdicts as they arrive."""
        from streams.demo import run_demo  # dev-only imports stay out of the worker

        await run_demo(app.guard_settings, duration=duration, rate=rate, seed=seed)

    @app.command(
        option(
            "--principal",
            default="User:ccc-guard",
            help="The worker's Kafka principal (default: User:ccc-guard).",
        ),
    )
    async def acls(self: AppCommand, principal: str) -> None:
        """Print the kafka-acls.sh commands granting a worker's user what it needs."""
        settings = app.guard_settings
        for grant in worker_grants(app.catalogue, settings.app_id):
            args = " ".join(grant.kafka_acls_args(principal))
            print(f"# {grant.why}")
            print(
                f"kafka-acls.sh --bootstrap-server {settings.bootstrap_servers} "
                f"--command-config admin.properties {args}"
            )

    _ = (topics, demo, acls)
