"""A real PostgreSQL server for the tests: the one given in CHURN_TEST_PG_DSN, or a private
cluster started in a temporary folder on a free loopback port and stopped at the end.

Without PostgreSQL binaries the tests that need it skip on a developer's machine, and fail under
CI=true: there they must run.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root; root runs it as the postgres system user.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PostgresCluster:
    """A private PostgreSQL cluster in a temporary folder, on a free loopback port.

    `stop()` and `start()` again keep its data and port: a server that goes away and comes back.
    """

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="churn-pg-"))
        self.data, self.sockets, self.port = self.root / "data", self.root / "sockets", free_port()
        self.sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        subprocess.run(
            _as_postgres([str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth=trust", "--encoding=UTF8", "--no-sync"]),
            check=True, capture_output=True,
        )

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(_as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args]),
                       check=check, capture_output=True)

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def start(self, *settings: str) -> "PostgresCluster":
        """Start on the cluster's port; `settings` are more server settings, as "name=value"."""
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += "".join(f" -c {setting}" for setting in settings)
        self._pg_ctl("-o", options, "-l", str(self.log_file), "-w", "start")
        return self

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def pg_binaries() -> Path:
    """The server binaries' folder; skips the test without them, and fails it under CI=true."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return bin_dir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """An admin DSN (libpq key=value) for a running PostgreSQL server."""
    if dsn := os.environ.get("CHURN_TEST_PG_DSN"):
        yield dsn
        return
    cluster = PostgresCluster(pg_binaries()).start()
    try:
        yield cluster.dsn
    finally:
        cluster.remove()


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    name = f"churn_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(pg_server, dbname=name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
