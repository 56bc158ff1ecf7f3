"""A throwaway PostgreSQL server for the tests that need a real one.

The PostgreSQL store backend is proven against a real server, not a double: this module
finds the server binaries already on the machine (Debian's ``postgresql`` package, or any
PostgreSQL 13+ build), makes a cluster in a temporary directory, starts it on a free
loopback port with durability turned off (the data is thrown away anyway, and fsync is
most of the cost), and hands out one fresh database per test.

PostgreSQL refuses to run as root, and CI containers often are root: then initdb, pg_ctl
and the server run as the ``nobody`` user, in a directory only that user can read.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

USER = "streambot"
"""The cluster's superuser, the user name in every URL."""

HOST = "127.0.0.1"

RUN_AS = "nobody"
"""The unprivileged account the server runs as when the tests run as root."""

SERVER_BINARIES = ("initdb", "pg_ctl")
"""What a directory needs to count as a server bindir (pg_ctl finds postgres beside it)."""

START_ATTEMPTS = 5
"""Free ports picked before giving up: another process can take one between the pick
(bind to port 0, close) and the server's own bind."""

LOG_TAIL_LINES = 40

# Settings for a cluster nobody cares about after the run: no fsync, no waiting on the
# WAL, no full pages after a checkpoint. max_connections leaves room for a pool per test.
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}

_SAFE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PORT_TAKEN = ("could not bind", "address already in use", "could not create any tcp/ip")


class PostgresClusterError(RuntimeError):
    """The throwaway cluster could not be made, started or used."""


# -- finding the server binaries -------------------------------------------------------


def _is_server_bindir(path: Path) -> bool:
    return all((path / name).is_file() for name in SERVER_BINARIES)


def _pg_config_bindir() -> Path | None:
    """pg_config's bindir, when it is a server's: Debian's pg_config can be the client's."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out and _is_server_bindir(Path(out)) else None


def _version_key(path: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/<N>/bin sorted by N as numbers (9.6 < 13 < 15)."""
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (-1,)


def _debian_bindir() -> Path | None:
    """The newest of Debian's side-by-side major versions that has a server."""
    candidates = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if _is_server_bindir(d)]
    return max(candidates, key=_version_key, default=None)


def _path_bindir() -> Path | None:
    """initdb on PATH; a symlink (/usr/local/bin/initdb) is followed to the real bindir,
    where the client programs (createdb, psql) of the same version sit too."""
    initdb = shutil.which("initdb")
    if initdb is None:
        return None
    real = Path(initdb).resolve().parent
    if _is_server_bindir(real):
        return real
    here = Path(initdb).parent
    return here if _is_server_bindir(here) else None


def find_bindir() -> Path | None:
    """The directory of the PostgreSQL server binaries (initdb, pg_ctl, postgres), if any."""
    return _pg_config_bindir() or _debian_bindir() or _path_bindir()


# -- running commands, as nobody when we are root --------------------------------------


def _child_env(home: Path) -> dict[str, str]:
    """Our environment without the PG* variables (PGHOST, PGPORT, PGPASSWORD, ... would
    point the programs elsewhere), with HOME in the cluster's directory: runuser would
    otherwise leave /root, or nobody's /nonexistent, which psql and friends try to read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = str(home)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no server log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(the server log is empty)"


def _traversable_by_all(path: Path) -> bool:
    """Whether every directory down to `path` lets other users through (o+x)."""
    return all(part.stat().st_mode & stat.S_IXOTH for part in (path, *path.parents))


class _Runner:
    """Runs the server programs as the user PostgreSQL will accept.

    As root that is ``nobody``, through runuser (util-linux; root needs no password)
    or, where there is none, setpriv; otherwise the current user, unchanged.
    """

    def __init__(self) -> None:
        self.prefix: list[str] = []
        self.account: pwd.struct_passwd | None = None
        if os.geteuid() != 0:
            return
        try:
            self.account = pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PostgresClusterError(
                f"the tests run as root, which PostgreSQL refuses, and there is no "
                f"{RUN_AS!r} user to run the throwaway server as: run the tests as an "
                f"unprivileged user, or add {RUN_AS!r}"
            ) from None
        if shutil.which("runuser"):
            # --preserve-environment: keep the HOME we set rather than nobody's own.
            self.prefix = ["runuser", "--preserve-environment", "-u", RUN_AS, "--"]
        elif shutil.which("setpriv"):
            self.prefix = [
                "setpriv",
                f"--reuid={self.account.pw_uid}",
                f"--regid={self.account.pw_gid}",
                "--clear-groups",
                "--",
            ]
        else:
            raise PostgresClusterError(
                f"the tests run as root and neither runuser nor setpriv (util-linux) is "
                f"installed to start PostgreSQL as {RUN_AS!r}"
            )

    def give(self, path: Path) -> None:
        """Hand `path` to the server's user (a no-op unless we are root)."""
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def run(
        self, argv: list[str], cwd: Path, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a server program; cwd is the cluster's directory, which nobody can enter
        (the repository, say /root/..., may not be)."""
        return subprocess.run(
            [*self.prefix, *argv],
            cwd=cwd,
            env=_child_env(cwd),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _temp_root() -> str | None:
    """Where to make the cluster's directory: the usual temp dir, unless nobody could not
    reach it (TMPDIR under /root), then /tmp."""
    default = Path(tempfile.gettempdir())
    if os.geteuid() != 0 or _traversable_by_all(default):
        return None
    return "/tmp"


# -- the cluster -----------------------------------------------------------------------


class PostgresCluster:
    """One throwaway PostgreSQL server: ``start()``, ``create_database()``, ``stop()``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = 0
        self.tmp: Path | None = None
        self._runner: _Runner | None = None
        self._names = itertools.count(1)

    @property
    def data_dir(self) -> Path:
        return self._tmp / "data"

    @property
    def log_file(self) -> Path:
        return self._tmp / "server.log"

    @property
    def _tmp(self) -> Path:
        if self.tmp is None:
            raise PostgresClusterError("the cluster is not started")
        return self.tmp

    # -- start -----------------------------------------------------------------------

    def start(self) -> None:
        """Make the cluster and start its server; on failure nothing is left behind."""
        if self.tmp is not None:
            raise PostgresClusterError("the cluster is already started")
        self._runner = _Runner()
        self.tmp = Path(tempfile.mkdtemp(prefix="streambot-pg-", dir=_temp_root()))
        # Registered at once: a run that dies past this point still stops the server.
        atexit.register(self.stop)
        try:
            # mkdtemp's mode already, made sure of: only the server's user looks inside.
            os.chmod(self.tmp, 0o700)
            self._runner.give(self.tmp)
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise

    def _initdb(self) -> None:
        """initdb, in C.UTF-8 where the C library knows it, else in plain C."""
        failures = []
        for locale in ("C.UTF-8", "C"):
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a failed try's leftovers
            result = self._server_program(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                f"--locale={locale}",
                # No fsync of the new files either: most of initdb's time, for nothing.
                "--no-sync",
            )
            if result.returncode == 0:
                return
            failures.append(f"--locale={locale}:\n{result.stdout}{result.stderr}")
        raise PostgresClusterError("initdb failed\n" + "\n".join(failures))

    def _start_server(self) -> None:
        """pg_ctl start on a free port, again on another if that one was taken meanwhile."""
        for _ in range(START_ATTEMPTS):
            self.port = _free_port()
            self.log_file.unlink(missing_ok=True)  # so the tail is this attempt's
            result = self._server_program(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.log_file),
                "-o",
                self._server_options(),
                "start",
            )
            if result.returncode == 0:
                return
            log = _tail(self.log_file)
            if not any(sign in log.lower() for sign in _PORT_TAKEN):
                raise PostgresClusterError(
                    f"the PostgreSQL server did not start (pg_ctl exit {result.returncode})"
                    f"\n{result.stdout}{result.stderr}\nserver log tail:\n{log}"
                )
        raise PostgresClusterError(
            f"no free port after {START_ATTEMPTS} tries; server log tail:\n{log}"
        )

    def _server_options(self) -> str:
        """The postgres command line pg_ctl passes on (through /bin/sh, hence the quoting)."""
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            # The socket lives in our own directory: no clash with a system server's
            # /var/run/postgresql, which nobody cannot write to anyway.
            "unix_socket_directories": str(self._tmp),
        }
        return " ".join(f"-c {key}={shlex.quote(value)}" for key, value in settings.items())

    def _server_program(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        assert self._runner is not None
        return self._runner.run([str(self.bindir / name), *args], cwd=self._tmp)

    # -- use -------------------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{database}"

    def new_database_name(self) -> str:
        """t<counter>_<random hex>: unique within the run, safe as a bare identifier."""
        return f"t{next(self._names)}_{secrets.token_hex(4)}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database (a copy of template1); returns its URL."""
        name = name or self.new_database_name()
        self._client("createdb", _checked_name(name))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a test's database, closing connections it left open (PostgreSQL 13+)."""
        self._client("dropdb", "--force", "--if-exists", _checked_name(name))

    def psql(self, database: str, sql: str) -> str:
        """Run SQL through psql over TCP, as a client would; returns the unaligned rows."""
        # -X: no ~/.psqlrc; -A -t: bare rows; ON_ERROR_STOP: a failing statement fails.
        return self._client(
            "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql
        )

    def _client(self, name: str, *args: str) -> str:
        """A client program of the server's own version, over TCP. Clients may run as
        root: only the server refuses to."""
        program = self.bindir / name
        argv = [str(program if program.is_file() else name), "-h", HOST, "-p", str(self.port)]
        result = subprocess.run(
            [*argv, "-U", USER, *args],
            cwd=self._tmp,
            env=_child_env(self._tmp),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise PostgresClusterError(
                f"{name} {' '.join(args)} failed: {result.stderr.strip() or result.stdout}"
            )
        return result.stdout

    # -- stop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server at once (immediate: nothing is worth a clean shutdown) and
        remove its directory. Safe to call twice, and from atexit."""
        if self.tmp is None:
            return
        atexit.unregister(self.stop)
        if (self.data_dir / "postmaster.pid").exists():
            self._server_program("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None


def _checked_name(name: str) -> str:
    """Database names go into commands unquoted: only plain lower-case identifiers."""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"not a safe database name: {name!r}")
    return name
