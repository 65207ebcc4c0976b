"""PostgreSQL from Debian's packages: the store behind the API's history and accuracy.

The server refuses to run as root, and sessions and CI run as root, so
``initdb`` and ``postgres`` (``/usr/lib/postgresql/<v>/bin``) run as an
unprivileged OS user (``TRAFFIC_POSTGRES_OS_USER``, Debian's ``postgres``) via
``setpriv``, which execs (the PID file holds the postmaster itself). The data
directory ``<work>/data/postgres/pgdata`` belongs to that user; the server
listens on ``TRAFFIC_HOST:TRAFFIC_POSTGRES_PORT`` only (no Unix socket), with
password (SCRAM) authentication for ``TRAFFIC_POSTGRES_USER``. After the first
health check the database ``TRAFFIC_POSTGRES_DB`` is created if missing and the
store's migrations run (:func:`store.db.migrate`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from runners.install import postgres_bin_dir
from runners.platform.process import PlatformError, wait_until
from runners.platform.service import Launch, Service

__all__ = ["PostgresService"]


class PostgresService(Service):
    name = "postgres"
    process_names = ("postgres",)

    def ports(self) -> dict[str, int]:
        return {"sql": self.settings.postgres_port}

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _bin(self, tool: str) -> str:
        found = postgres_bin_dir()
        if found is None:
            raise PlatformError("postgres: Debian's postgresql server is not installed; run `traffic setup` first")
        return str(found / tool)

    def _os_user(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(self.settings.postgres_os_user)
        except KeyError:
            raise PlatformError(f"postgres: OS user {self.settings.postgres_os_user!r} does not exist "
                                "(Debian's postgresql package creates 'postgres')") from None

    def _as_user(self, *argv: str) -> list[str]:
        if os.geteuid() != 0:  # already unprivileged: run directly
            return list(argv)
        user = self._os_user()
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PlatformError("postgres: `setpriv` (util-linux) is needed to run the server as "
                                f"{user.pw_name}, not root")
        return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv]

    def check_installed(self) -> None:
        self._bin("postgres")
        self._os_user()

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = self._os_user()
            os.chown(path, user.pw_uid, user.pw_gid)

    def _traversable(self) -> None:
        """Let the server's user reach its data directory: o+x (search, not read) on every ancestor lacking it
        (e.g. pytest's 0700 /tmp/pytest-of-root)."""
        if os.geteuid() != 0:
            return
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._traversable()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.pgdata)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.conf_dir / "initdb-password"
        pwfile.write_text(self.settings.postgres_password.get_secret_value() + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        log = self.processes()[0].log_file
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = self._as_user(self._bin("initdb"), "-D", str(self.pgdata), "-U", self.settings.postgres_user,
                             f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                             "-E", "UTF8", "--no-locale")
        try:
            with log.open("ab") as out:
                rc = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.data_dir)
        finally:
            pwfile.unlink(missing_ok=True)
        if rc != 0:
            raise PlatformError(f"postgres: initdb failed (exit {rc}); read {log}")

    def prepare(self) -> list[Launch]:
        if not (self.pgdata / "PG_VERSION").exists():
            shutil.rmtree(self.pgdata, ignore_errors=True)
            self._initdb()
        argv = self._as_user(
            self._bin("postgres"), "-D", str(self.pgdata), "-p", str(self.settings.postgres_port),
            "-c", f"listen_addresses={self.host}", "-c", "unix_socket_directories=",
            "-c", "shared_buffers=128MB", "-c", "max_connections=60", "-c", "synchronous_commit=off",
        )
        return [Launch("postgres", argv, env={"LANG": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})]

    def healthy(self) -> bool:
        if self.settings.postgres_port not in self.listening_ports():
            return False
        import psycopg  # noqa: PLC0415 - only needed once the server listens

        try:
            with psycopg.connect(self._dsn("postgres")) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _dsn(self, dbname: str) -> str:
        return self.settings.postgres_dsn.replace(f"dbname={self.settings.postgres_db}", f"dbname={dbname}")

    def _up(self) -> bool:
        started = super()._up()
        self._ensure_database()
        return started

    def _ensure_database(self) -> None:
        """Create the store's database if missing and bring its schema to the newest migration."""
        import psycopg  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        from store.db import migrate  # noqa: PLC0415 - the store floor sits below runners

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.postgres_db,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.settings.postgres_db)))
        with psycopg.connect(self.settings.postgres_dsn) as conn:
            migrate(conn)

    def _down(self) -> bool:
        """Fast shutdown (SIGINT: clients are disconnected) instead of SIGTERM's wait for every client."""
        proc = self.processes()[0]
        pid = proc.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        wait_until(lambda: proc.pid() is None, 30.0)
        return proc.stop() or True
