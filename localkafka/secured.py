"""The secured node's SASL_SSL listener: its SCRAM users, the ``admin`` super user, the TLS
files from a throwaway CA, and ACLs granted with Kafka's own ``kafka-acls``.

Everything here lives in the node's working directory, so a restarted node keeps its users,
its certificate and its admin password.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from aiokafka.helpers import create_ssl_context

from .config import ADMIN_USER, SCRAM_MECHANISM, admin_client_properties, render_properties
from .errors import LocalKafkaError
from .process import LOG_TAIL_CHARS, run_tool
from .tls import ensure_server_tls, write_private

ACL_COMMAND: Final = "org.apache.kafka.tools.AclCommand"
_ACL_TIMEOUT_S: Final = 120.0
# Kept to what StorageTool's --add-scram syntax ([name=...,password=...]) and a JAAS line carry
# without quoting rules.
_SCRAM_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SCRAM_PASSWORD: Final = re.compile(r"[A-Za-z0-9._~+-]{8,128}")


def check_scram_users(users: Mapping[str, str]) -> dict[str, str]:
    """``users`` (name -> password) as a dict, or ``LocalKafkaError`` for a name or password
    the format tool or a JAAS line could not carry."""
    for name, password in users.items():
        if name == ADMIN_USER or not _SCRAM_NAME.fullmatch(name):
            raise LocalKafkaError(
                f"SCRAM user name {name!r}: 1-64 of [A-Za-z0-9._-], and not {ADMIN_USER!r}"
            )
        if not _SCRAM_PASSWORD.fullmatch(password):
            # The password itself is not quoted: this message can end up in a test log.
            raise LocalKafkaError(
                f"the password of SCRAM user {name!r} must be 8-128 of [A-Za-z0-9._~+-]"
            )
    return dict(users)


class SecuredListener:
    """The SASL_SSL side of one node whose working directory is ``workdir``."""

    def __init__(self, workdir: Path, users: Mapping[str, str]) -> None:
        self._workdir = workdir
        self._users = dict(users)
        self._tls_dir = workdir / "tls"
        # What clients trust, and what the broker serves (ensure_server_tls makes both).
        self.ca_file = self._tls_dir / "ca.pem"
        self.keystore = self._tls_dir / "server-keystore.pem"
        # --command-config of Kafka's CLI tools, as admin.
        self.admin_client_properties = workdir / "admin-client.properties"
        self._admin_password_file = workdir / "admin.password"

    @property
    def admin_password(self) -> str:
        path = self._admin_password_file
        if not path.is_file():
            raise LocalKafkaError("the node has no admin user yet: call start() first")
        return path.read_text(encoding="ascii").strip()

    def prepare(self, *, formatted: bool) -> None:
        """The TLS files, and for a node still to be formatted a new admin password."""
        ensure_server_tls(self._tls_dir)
        if not formatted:
            write_private(self._admin_password_file, secrets.token_urlsafe(24) + "\n")

    def write_admin_client_properties(self) -> None:
        properties = admin_client_properties(self.admin_password, self.ca_file)
        write_private(self.admin_client_properties, render_properties(properties))

    def format_args(self) -> list[str]:
        """StorageTool arguments that create the admin and every user at format time."""
        users = {ADMIN_USER: self.admin_password, **self._users}
        return [
            arg
            for name, password in users.items()
            for arg in ("--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]")
        ]

    def admin_auth(self) -> dict[str, Any]:
        """aiokafka keyword arguments that connect to the SASL_SSL listener as admin."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_plain_username": ADMIN_USER,
            "sasl_plain_password": self.admin_password,
            "ssl_context": create_ssl_context(cafile=str(self.ca_file)),
        }

    def acl_command(self, tool: Sequence[str], bootstrap_servers: str, args: Sequence[str]) -> str:
        """Run ``kafka-acls`` with ``args`` as admin over ``bootstrap_servers`` (SASL_SSL);
        ``tool`` is the JVM command line up to the main class. Returns its output."""
        command = [
            *tool,
            ACL_COMMAND,
            "--bootstrap-server",
            bootstrap_servers,
            "--command-config",
            str(self.admin_client_properties),
            *args,
        ]
        what = f"kafka-acls {' '.join(args)}"
        output = run_tool(command, cwd=self._workdir, timeout_s=_ACL_TIMEOUT_S, what=what)
        # The tool's own failure line counts even where its exit code says success.
        if "Error while executing" in output:
            raise LocalKafkaError(f"{what} failed:\n{output[-LOG_TAIL_CHARS:]}")
        return output
