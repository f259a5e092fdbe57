"""A throwaway PostgreSQL server on loopback for the tests: Debian's `postgresql` binaries,
a fresh cluster in a temporary directory, one database per user of it, stopped afterwards.

`make test` installs the package when it is missing (the Makefile's `postgres` target); without
it the PostgreSQL variants of the tests are skipped with a reason.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
# PostgreSQL refuses to run as root; Debian's package makes this system user.
PG_USER = "postgres"
START_SECONDS = 60


def bindir() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = [p.parent for p in PG_ROOT.glob("*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def missing_reason() -> str | None:
    if bindir() is None:
        return "needs Debian's postgresql package (`make test` installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root needs the {PG_USER!r} user (Debian's postgresql makes it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One `postgres` process on 127.0.0.1:<free port> with password (scram) authentication."""

    def __init__(self) -> None:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        self.bin = bindir()
        self.port = _free_port()
        self.password = secrets.token_urlsafe(18)
        self.dir = Path(tempfile.mkdtemp(prefix="overcast-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._started = False

    def _run(self, *argv: str) -> None:
        """A PostgreSQL tool, as the postgres user when we are root (it refuses root)."""
        prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        done = subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True,
                              timeout=START_SECONDS, check=False)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): "
                               f"{done.stdout[-1000:]}{done.stderr[-1000:]}\n{tail}")

    def start(self) -> PostgresServer:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        os.chmod(pwfile, 0o600)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER,
                  "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-locale", "-E", "UTF8",
                  "--no-sync")
        pwfile.unlink()
        # Loopback only, its socket in our directory; durability off (a throwaway cluster).
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=300")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-w", "-t", str(START_SECONDS), "-o", options, "start")
        self._started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql+psycopg://{PG_USER}:{self.password}@127.0.0.1:{self.port}/"
                f"{database}")

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER,
                             password=self.password, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self._started:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                          "stop")
                self._started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
