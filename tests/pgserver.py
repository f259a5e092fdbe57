"""A throwaway PostgreSQL server on loopback for the tests: Debian's `postgresql` binaries,
a fresh cluster in a temporary directory, one database per user of it, stopped afterwards
(and killed with the test process if that dies first).

`make test` installs the package when it is missing (the Makefile's `postgres` target); without
it the PostgreSQL variants of the tests are skipped with a reason.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
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
        self.proc: subprocess.Popen | None = None

    def _as_postgres(self) -> list[str]:
        """Run as the postgres user when we are root (PostgreSQL refuses root), and die with
        the test process even if it is killed (-9): no server outlives its run."""
        user = [f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups"]
        return ["setpriv", *(user if os.geteuid() == 0 else []), "--pdeathsig", "KILL", "--"]

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def start(self) -> PostgresServer:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        os.chmod(pwfile, 0o600)
        done = subprocess.run(
            [*self._as_postgres(), str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER,
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-locale", "-E", "UTF8",
             "--no-sync"], env=self._env(), capture_output=True, text=True,
            timeout=START_SECONDS, check=False)
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
        # Loopback only, its socket in our directory; durability off (a throwaway cluster).
        options = ["listen_addresses=127.0.0.1", f"port={self.port}",
                   f"unix_socket_directories={self.dir}", "fsync=off",
                   "synchronous_commit=off", "full_page_writes=off", "max_connections=300"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self._as_postgres(), str(self.bin / "postgres"), "-D", str(self.data),
                 *(arg for o in options for arg in ("-c", o))],
                env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}):\n{self._tail()}")
            try:
                psycopg.connect(self._dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"postgres did not answer:\n{self._tail()}") from None
                time.sleep(0.1)

    def _dsn(self, database: str) -> str:
        return (f"host=127.0.0.1 port={self.port} user={PG_USER} password={self.password} "
                f"dbname={database}")

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql+psycopg://{PG_USER}:{self.password}@127.0.0.1:{self.port}/"
                f"{database}")

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, stop), then remove the directory."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
