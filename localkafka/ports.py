"""Free loopback ports, for the broker's listeners and for anything else a local run starts
(workers' web servers, Prometheus)."""

from __future__ import annotations

import contextlib
import socket
from typing import Final

HOST: Final = "127.0.0.1"


def free_ports(count: int) -> tuple[int, ...]:
    """``count`` distinct ports nobody listens on right now.

    Binding to port 0 and closing the socket leaves a race: another process can take a port
    before its user binds it. Callers that can, retry on new ports (``LocalKafka`` does).
    """
    # Every socket stays bound until all ports are chosen so the kernel cannot hand out the
    # same port twice.
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((HOST, 0))
        return tuple(int(sock.getsockname()[1]) for sock in sockets)


def free_port() -> int:
    return free_ports(1)[0]


def can_connect(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False
