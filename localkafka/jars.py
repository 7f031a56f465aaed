"""Fetch the Kafka broker's jars from Maven Central into a per-version cache.

The broker is not vendored: ``pom.xml`` next to this module names it, Maven resolves it, and the
resulting directory of jars is the broker's whole classpath (and its tools', such as
``AclCommand``). A cache entry is only ever created by renaming a finished download into place, so
a run that is interrupted or races another one never leaves (or sees) half a classpath. The
classpath directory is named after a digest of ``pom.xml``: a changed POM fetches a new one beside
the old, never replacing jars that a running broker may still load classes from.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import LocalKafkaError

DEFAULT_KAFKA_VERSION = "4.1.2"

_POM = Path(__file__).with_name("pom.xml")
_MARKER = ".complete"
_STAGING_PREFIX = "fetch-"
# A cold ~/.m2 downloads ~50 jars (about 40 MB); generous, but bounded so CI cannot hang here.
_MVN_TIMEOUT_S = 900.0
_OUTPUT_TAIL_CHARS = 4000
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def cache_root() -> Path:
    """Directory under which every Kafka version gets its own ``kafka-<version>`` entry."""
    configured = os.environ.get("CCC_KAFKA_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "ccc-guard"


def ensure_broker_jars(version: str = DEFAULT_KAFKA_VERSION) -> Path:
    """Return a directory holding the broker's complete runtime classpath for ``version``.

    Runs ``mvn`` only when the cache has no complete entry for that version yet. Raises
    ``LocalKafkaError`` when Java or Maven is missing or the download fails.
    """
    _check_version(version)
    entry = cache_root() / f"kafka-{version}"
    lib = entry / f"lib-{_pom_digest()}"
    if _is_complete(lib):
        return lib

    # Checked before Maven so a machine without Java gets that message, not Maven's.
    find_java()
    mvn = _require_tool("mvn", "fetching the local Kafka broker's jars needs Maven")
    try:
        entry.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalKafkaError(f"cannot create the Kafka jar cache {entry}: {exc}") from exc

    # Serialise fetchers of the same version: two Maven runs writing the same artifacts into
    # ~/.m2 at once is not safe, and the second one would only redo the first one's work.
    with _exclusive_lock(entry / ".lock") as lock_fd:
        if _is_complete(lib):
            return lib
        # Holding the lock, any staging dir left here belongs to a fetch that was killed.
        for leftover in entry.glob(f"{_STAGING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=entry))
        try:
            staged_lib = staging / "lib"
            _run_maven(mvn, version, staging, staged_lib, lock_fd)
            _check_download(staged_lib, version)
            (staged_lib / _MARKER).write_text(f"kafka {version}\n", encoding="utf-8")
            _install(staged_lib, lib, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return lib


def find_java() -> str:
    """The ``java`` executable: ``$JAVA_HOME/bin/java`` if set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return _require_tool("java", "the local Kafka broker needs Java 17 or newer (or JAVA_HOME)")


def _check_version(version: str) -> None:
    # The version becomes part of a path and a Maven property; refuse anything that could
    # escape the cache directory or smuggle in another argument.
    allowed = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_")
    if not version or version.startswith(("-", ".")) or not set(version) <= allowed:
        raise LocalKafkaError(f"not a Kafka version: {version!r}")


def _pom_digest() -> str:
    return hashlib.sha256(_POM.read_bytes()).hexdigest()[:12]


def _is_complete(lib: Path) -> bool:
    return (lib / _MARKER).is_file()


def _require_tool(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LocalKafkaError(f"{name!r} not found on PATH: {why}")
    return found


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[int]:
    """Hold an exclusive flock on ``path``; yields the descriptor so children can share it."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle.fileno()
    # Closing releases our hold; a child that inherited the descriptor keeps the lock alive.


def _run_maven(mvn: str, version: str, staging: Path, out_dir: Path, lock_fd: int) -> None:
    # Maven is pointed at a copy of the POM in the staging dir: the installed package directory
    # may be read-only, and Maven may leave a target/ next to the POM it runs.
    pom = staging / "pom.xml"
    shutil.copyfile(_POM, pom)
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out_dir}",
        "-DincludeScope=runtime",
        f"-Dkafka.version={version}",
    ]
    try:
        done = subprocess.run(
            command,
            cwd=staging,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=_MVN_TIMEOUT_S,
            check=False,
            # Maven inherits the lock: if this process is killed mid-fetch, the orphaned mvn
            # still holds it, so the next fetch waits for it instead of deleting its staging
            # dir under it (and then removes it as a leftover).
            pass_fds=(lock_fd,),
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else ""
        raise LocalKafkaError(
            f"mvn did not finish fetching Kafka {version} within {_MVN_TIMEOUT_S:.0f} s"
            f"{_tail_block(output)}"
        ) from exc
    except OSError as exc:
        raise LocalKafkaError(f"cannot run mvn: {exc}") from exc
    if done.returncode != 0:
        raise LocalKafkaError(
            f"mvn failed (exit {done.returncode}) fetching Kafka {version}"
            f"{_tail_block(done.stdout)}"
        )


def _check_download(lib: Path, version: str) -> None:
    # A wrong or partially honoured version property would otherwise surface much later as a
    # ClassNotFoundException in the broker's log.
    for jar in (f"kafka_2.13-{version}.jar", f"kafka-tools-{version}.jar"):
        if not (lib / jar).is_file():
            raise LocalKafkaError(f"mvn finished but {jar} is not in {lib}")


def _install(staged_lib: Path, lib: Path, entry: Path) -> None:
    if lib.exists():
        # Only a cache entry without its marker gets here (put there by hand or by an older
        # layout): move it aside first so the rename below stays a single atomic step.
        trash = Path(tempfile.mkdtemp(prefix="stale-", dir=entry))
        lib.rename(trash / "lib")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        staged_lib.rename(lib)
    except OSError as exc:
        raise LocalKafkaError(f"cannot move the fetched jars into {lib}: {exc}") from exc


def _tail_block(output: str) -> str:
    # Maven's console library emits colour resets even in batch mode with colour off.
    tail = _ANSI_ESCAPE.sub("", output).strip()[-_OUTPUT_TAIL_CHARS:]
    return f":\n{tail}" if tail else " (no output)"
