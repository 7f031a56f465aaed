"""A throwaway certificate authority and server certificate for the local broker's TLS listener.

Made with the ``openssl`` command-line tool (no Python crypto dependency): a CA valid for a few
days, and a server certificate it signs for ``localhost`` and ``127.0.0.1``, with the extensions
strict verifiers want (basic constraints, key usage, subject and authority key identifiers). The
CA's private key is deleted once the server certificate is signed: nothing else can be issued
under it. Clients trust ``ca.pem``; the broker reads ``server-keystore.pem`` (private key +
certificate chain, Kafka's PEM keystore format).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import LocalKafkaError
from .process import run_tool

_VALID_DAYS: Final = "30"
_OPENSSL_TIMEOUT_S: Final = 60.0
_SERVER_NAMES: Final = "DNS:localhost,IP:127.0.0.1"

_SERVER_EXTENSIONS: Final = f"""\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {_SERVER_NAMES}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path  # PEM: the CA certificate clients trust
    keystore_file: Path  # PEM: the server's private key (PKCS#8), its certificate, the CA's


def ensure_server_tls(directory: Path) -> TlsFiles:
    """The CA and server keystore in ``directory``, made on first use and kept afterwards (a
    restarted node keeps its certificate, so clients holding the CA file keep working) until
    the certificate is within a day of expiring."""
    files = TlsFiles(directory / "ca.pem", directory / "server-keystore.pem")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise LocalKafkaError("'openssl' not found on PATH: the TLS listener needs a certificate")
    if (
        files.ca_file.is_file()
        and files.keystore_file.is_file()
        and _valid_for_a_day(openssl, files.keystore_file)
    ):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    work = directory / "issuing"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    try:
        (work / "server.ext").write_text(_SERVER_EXTENSIONS, encoding="ascii")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _run(
            openssl,
            ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", _VALID_DAYS],
            ["-subj", "/CN=localkafka throwaway CA", "-config", "/dev/null"],
            ["-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"],
            ["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["-addext", "subjectKeyIdentifier=hash"],
            cwd=work,
        )
        _run(
            openssl,
            ["req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr"],
            ["-subj", "/CN=localhost", "-config", "/dev/null"],
            cwd=work,
        )
        _run(
            openssl,
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"],
            ["-CAcreateserial", "-out", "server.pem", "-days", _VALID_DAYS, "-sha256"],
            ["-extfile", "server.ext"],
            cwd=work,
        )
        key = (work / "server.key").read_text(encoding="ascii")
        if "BEGIN PRIVATE KEY" not in key:  # Kafka's PEM keystore reads PKCS#8 only
            raise LocalKafkaError("openssl wrote the server key in a format Kafka cannot read")
        ca = (work / "ca.pem").read_text(encoding="ascii")
        chain = (work / "server.pem").read_text(encoding="ascii") + ca
        write_private(files.keystore_file, key + chain)
        files.ca_file.write_text(ca, encoding="ascii")
    finally:
        # Takes the CA's private key with it: nothing else can ever be signed by this CA.
        shutil.rmtree(work, ignore_errors=True)
    return files


def _valid_for_a_day(openssl: str, certificate: Path) -> bool:
    # x509 reads the first certificate of the file, skipping the key before it.
    command = [openssl, "x509", "-noout", "-checkend", "86400", "-in", str(certificate)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=_OPENSSL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _run(openssl: str, *parts: list[str], cwd: Path) -> None:
    command = [openssl, *(arg for part in parts for arg in part)]
    run_tool(command, cwd=cwd, timeout_s=_OPENSSL_TIMEOUT_S, what=" ".join(command[:3]))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a key or a password)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
    tmp.replace(path)
