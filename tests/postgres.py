"""A throwaway PostgreSQL server for tests: its own cluster in a temporary folder, on a loopback port, trust auth."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DEBIAN_VERSIONS = Path("/usr/lib/postgresql")
# PostgreSQL refuses to run as root; Debian's package creates this user to run it as.
SERVICE_USER = "postgres"


def _version(folder_name: str) -> int:
    return int(folder_name) if folder_name.isdigit() else 0


def binaries() -> Path | None:
    """The folder with initdb and pg_ctl: from PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(DEBIAN_VERSIONS.glob("*/bin/initdb"), key=lambda initdb: _version(initdb.parents[1].name))
    return found[-1].parent if found else None


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None when one can."""
    if binaries() is None:
        return "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root, and there is no '{SERVICE_USER}' user to run PostgreSQL as"
    return None


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def create_database(server: str, database: str) -> str:
    """Another empty `database` on the server of SQLAlchemy URI `server`: its URI. A test that needs a store of its
    own takes one here rather than a server of its own, whose initdb and start cost seconds."""
    address = server.rpartition("@")[2].rpartition("/")[0]
    host, _, port = address.rpartition(":")
    _run([str(binaries() / "createdb"), "-h", host, "-p", port, "-U", "postgres", database])
    return f"postgresql+psycopg://postgres@{address}/{database}"


@contextmanager
def postgres_server(port: int, database: str) -> Iterator[str]:
    """A server on 127.0.0.1:`port` with an empty `database`; yields its SQLAlchemy URI, then stops and deletes it."""
    bin_dir = binaries()
    as_service_user = ["runuser", "-u", SERVICE_USER, "--"] if os.geteuid() == 0 else []
    # Not pytest's tmp_path: its parents are private to the user running the tests, and the server's user must
    # reach the data folder.
    root = Path(tempfile.mkdtemp(prefix="vae-sweep-postgres-"))
    data = root / "data"
    if as_service_user:
        shutil.chown(root, SERVICE_USER)
    pg_ctl = [*as_service_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
    try:
        _run([*as_service_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "--no-locale", "--encoding=UTF8", "--no-sync"])  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
        _run([*pg_ctl, "-l", str(root / "server.log"), "-o", options, "start"])
        try:
            yield create_database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", database)
        finally:
            _run([*pg_ctl, "-m", "fast", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
