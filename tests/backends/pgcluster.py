"""A throwaway PostgreSQL cluster for tests: initdb (trust auth on 127.0.0.1), start on a free port,
wait until ready, create a role + database, stop and remove.

Works as root (every server binary runs as the `postgres` OS user, via subprocess's `user=`) and as
a non-root user (runs directly). No sockets outside the cluster's own folder; nothing global touched.

    with pg_cluster() as pg:            # or the pytest fixture `postgres_server` below
        pg.create_database("lake", owner="provline")
        pg.conninfo("lake", "provline")  # 'dbname=lake host=127.0.0.1 port=NNNNN user=provline'
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# A role listed here must log in with a password (scram); everyone else is trusted. Used to test
# "wrong credentials" on a trust cluster.
PASSWORD_ROLE = "provline_pw"


def pg_bindir() -> Path:
    """The newest /usr/lib/postgresql/<N>/bin that has initdb (Debian layout), else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install -y postgresql")


def has_server() -> bool:
    """Whether PostgreSQL's server binaries (initdb, pg_ctl) are here."""
    try:
        pg_bindir()
    except RuntimeError:
        return False
    return True


def pgbouncer_binary() -> str | None:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    return binary if Path(binary).exists() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    root: Path  # holds data/, sock/, server.log
    port: int
    bindir: Path
    os_user: str | None  # OS user the server runs as (None: the current user)
    superuser: str = "postgres"
    durable: bool = False
    """Keep the server's durability defaults (fsync, synchronous commit): for benchmarks. Tests turn them off."""
    _env: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    # -- running the server's binaries as the right OS user --------------------------------------
    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        kw: dict = {}
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root)}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], check=check, capture_output=True, text=True,
            timeout=timeout, cwd=self.root, env=env, **kw,
        )

    def initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", self.superuser, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        # pg_hba: one password role (for wrong-credential tests), everything else trusted, TCP only
        (self.data / "pg_hba.conf").write_text(
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
            "local all all trust\n"
        )

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sock} "
                "-c max_connections=100 -c shared_buffers=32MB")
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        r = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "30",
                      "start", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed ({r.returncode}): {r.stdout}{r.stderr}\n"
                               f"{self.log.read_text() if self.log.exists() else ''}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            r = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q", check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} not ready after {timeout}s")
            time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def psql(self, sql: str, db: str = "postgres") -> str:
        r = self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", self.superuser, "-d", db, "-At", "-c", sql)
        return r.stdout

    # -- conveniences for tests ---------------------------------------------------------------------
    def create_role(self, name: str, password: str | None = None) -> None:
        """A login role (once: an existing role is left as it is)."""
        if self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{name}'").strip():
            return
        pw = f" PASSWORD '{password}'" if password else ""
        self.psql(f'CREATE ROLE "{name}" LOGIN{pw}')

    def create_database(self, name: str, owner: str | None = None) -> None:
        if owner:
            self.create_role(owner)
        self.psql(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))

    def conninfo(self, db: str = "postgres", user: str | None = None) -> str:
        return f"dbname={db} host=127.0.0.1 port={self.port} user={user or self.superuser}"


def _os_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


@contextlib.contextmanager
def pg_cluster(base: str | None = None, attempts: int = 3, durable: bool = False) -> Iterator[PgCluster]:
    """Create, start, yield, then stop and remove a cluster. Retries on a port race."""
    os_user = _os_user()
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=base or "/tmp"))  # short path: socket name limit
    if os_user:
        pw = pwd.getpwnam(os_user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    cluster = PgCluster(root=root, port=0, bindir=pg_bindir(), os_user=os_user, durable=durable)
    try:
        cluster.initdb()
        cluster.sock.mkdir()
        if os_user:
            os.chown(cluster.sock, pw.pw_uid, pw.pw_gid)
        for i in range(attempts):
            cluster.port = free_port()
            try:
                cluster.start()
                break
            except RuntimeError:
                if i == attempts - 1:
                    raise
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def pgbouncer(cluster: PgCluster, users: tuple[str, ...], pool_mode: str = "session") -> Iterator[int]:
    """PgBouncer in front of every database of `cluster` for these login roles (apt-get install pgbouncer);
    yields its port. Runs as the cluster's OS user (it refuses root), trust auth on 127.0.0.1, its log in the
    cluster's folder."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("PgBouncer not found: apt-get install -y pgbouncer")
    folder = cluster.root / "pgbouncer"
    folder.mkdir(exist_ok=True)
    port = free_port()
    (folder / "users.txt").write_text("".join(f'"{user}" ""\n' for user in users))
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n* = host=127.0.0.1 port={cluster.port}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = {pool_mode}\n"
        f"max_client_conn = 500\ndefault_pool_size = 10\nlogfile = {folder / 'pgbouncer.log'}\n"
        "log_connections = 0\nlog_disconnections = 0\n"
    )
    kw: dict = {}
    if cluster.os_user:
        pw = pwd.getpwnam(cluster.os_user)
        for path in (folder, *folder.iterdir()):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    # (its log goes to the logfile and to stderr: a pipe nobody reads would fill and stall it)
    process = subprocess.Popen([binary, str(folder / "pgbouncer.ini")], cwd=folder, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, **kw)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                log = folder / "pgbouncer.log"
                raise RuntimeError(f"PgBouncer did not start: {log.read_text()[-2000:] if log.exists() else ''}")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def dagster_storage_yaml(port: int, db: str, user: str, options: str | None = None) -> str:
    """The `storage:` section of a dagster.yaml for dagster-postgres on 127.0.0.1 (trust auth); `options` are
    libpq's (e.g. `-c synchronous_commit=off`). For the benchmarks' throwaway instances."""
    yaml = ("storage:\n  postgres:\n    postgres_db:\n      hostname: 127.0.0.1\n"
            f"      port: {port}\n      db_name: {db}\n      username: {user}\n      password: ''\n"
            "      scheme: postgresql+psycopg2\n")  # (the default under SQLAlchemy 2.0, pinned: pyproject.toml)
    return yaml + (f"      params:\n        options: {options}\n" if options else "")
