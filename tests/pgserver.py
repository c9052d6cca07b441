"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` binaries, initdb in a temporary
folder, a free port on loopback and a unix socket beside the data, stopped (and removed) at the end.

Never a system service. initdb and postgres refuse to run as root, so as root they run as the
``postgres`` user the Debian package creates (the folder is handed to it); as anyone else, as themselves.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"), Path("/usr/lib/postgresql/17/bin"))
SUPERUSER = "portal"


def _bin(name: str) -> str:
    for folder in BINARIES:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package (make test does)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """One running server; ``database()`` makes a fresh, empty database on it and returns its DSN."""

    folder: Path
    port: int = field(default_factory=_free_port)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _as_owner(self, *command: str) -> list[str]:
        # SECURITY/robustness: as root, the server runs as the unprivileged postgres user, never as root.
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def _run(self, *command: str) -> None:
        subprocess.run(self._as_owner(*command), check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        """Create the cluster (trust authentication on the socket and loopback only)."""
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        # fsync off: a killed server's commits are still in the OS's page cache, so a kill loses none of them
        # (synchronous_commit stays on: off, a kill would lose acknowledged commits, as the fault tests show).
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c max_connections=200"
        )
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as if it crashed, no checkpoint)."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """Kill the postmaster and so every backend at once (SIGKILL): the database vanishes mid-request."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        while True:  # the backends follow their postmaster; the folder's lock goes with the last
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)

    def dsn(self, database: str = "postgres") -> str:
        """The libpq URL of ``database`` over loopback TCP."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str | None = None, *, replace: bool = False) -> str:
        """A new empty database's DSN (``name``, dropped first if ``replace``; else a fresh name)."""
        name = name or f"t{os.getpid()}_{next(self._names)}"
        where = ("-h", str(self.folder), "-p", str(self.port), "-U", SUPERUSER)
        if replace:
            self._run(_bin("dropdb"), *where, "--if-exists", name)
        self._run(_bin("createdb"), *where, name)
        return self.dsn(name)

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def start_server(folder: Path | None = None) -> PostgresServer:
    """A server in ``folder`` (a cluster made there unless it has one), else in a new folder under /tmp."""
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="portal-pg-", dir="/tmp"))
    folder.mkdir(exist_ok=True)
    server = PostgresServer(folder)
    if not server.data.exists():
        server.init()
    server.start()
    return server
