"""The Kafka ACLs a worker's user needs, and nothing more.

- the two input topics: Read, Describe (and DescribeConfigs, for ``ccc-guard topics``' drift);
- the three output topics: Write, Describe (and DescribeConfigs);
- every topic whose name starts with ``<CCC_APP_ID>-``: All. These are the worker's own: the
  internal topics, the table changelogs and Faust's ``<app>-__assignor-__leader``, which the
  worker creates when they are missing (so Create is needed there, and only there);
- the consumer group ``<CCC_APP_ID>`` (the only group Faust uses): All.

No cluster-level permission: the external topics must exist before the worker starts (an
administrator creates them, e.g. with ``ccc-guard topics`` run as an admin user), and an
idempotent producer needs no IdempotentWrite since Kafka 3.0 (Write on a topic implies it).

``ccc-guard acls --principal User:<name>`` prints these grants as ``kafka-acls.sh`` commands.
"""

from __future__ import annotations

from dataclasses import dataclass

from topics.catalogue import Catalogue


@dataclass(frozen=True, slots=True)
class AclGrant:
    """Allow ``operations`` on the resources ``names`` of one type ("topic" or "group")."""

    resource_type: str
    names: tuple[str, ...]
    operations: tuple[str, ...]
    prefixed: bool = False
    why: str = ""

    def kafka_acls_args(self, principal: str) -> list[str]:
        """Arguments of ``kafka-acls.sh`` (Kafka's ``AclCommand``) that add this grant."""
        args = ["--add", "--allow-principal", principal]
        for operation in self.operations:
            args += ["--operation", operation]
        for name in self.names:
            args += [f"--{self.resource_type}", name]
        if self.prefixed:
            args += ["--resource-pattern-type", "prefixed"]
        return args


def worker_grants(catalogue: Catalogue, app_id: str) -> list[AclGrant]:
    """What a worker of ``app_id`` with these topics may do."""
    own_prefix = f"{app_id}-"
    inputs = tuple(spec.name for spec in catalogue.inputs())
    outputs = tuple(spec.name for spec in catalogue.outputs())
    internal = [spec.name for spec in catalogue.all() if spec.name.startswith(own_prefix)]
    external = [spec.name for spec in catalogue.all() if not spec.name.startswith(own_prefix)]
    if sorted(external) != sorted(inputs + outputs) or not internal:
        # The prefix grant below must cover every internal topic and no external one.
        raise ValueError(f"topic names do not split on the prefix {own_prefix!r}")
    return [
        AclGrant("topic", inputs, ("Read", "Describe", "DescribeConfigs"), why="inputs"),
        AclGrant("topic", outputs, ("Write", "Describe", "DescribeConfigs"), why="outputs"),
        AclGrant(
            "topic",
            (own_prefix,),
            ("All",),
            prefixed=True,
            why="internal topics, changelogs, Faust's leader topic (created by the worker)",
        ),
        AclGrant("group", (app_id,), ("All",), why="the consumer group"),
    ]
