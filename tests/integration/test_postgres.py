"""The embedded PostgreSQL as ``payments up`` runs it: its user, ``payments psql``, restarts, reuse."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from payments.config import Part
from payments.runtime import health
from payments.runtime.postgres import DatabaseError
from payments.tools.launcher import LaunchedDatabase, LaunchedStack
from tests.helpers import payments_cli, wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    """A stack of its own: these tests kill its database."""
    with LaunchedStack(tmp_path_factory.mktemp("postgres")) as launched:
        yield launched


def psql(stack: LaunchedStack, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> str:
    """``payments psql ARGS`` against ``stack``; its standard output."""
    result = payments_cli("psql", *args, settings=stack.settings, env=env, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def answers(url: str) -> bool:
    return asyncio.run(health.database_answers(url))


def test_the_pid_file_names_the_postmaster_run_by_an_unprivileged_user(stack: LaunchedStack) -> None:
    server = psutil.Process(stack.pid(Part.DATABASE))

    assert server.name() == "postgres"
    assert stack.process is not None
    assert server.ppid() == stack.process.pid
    expected = "nobody" if os.geteuid() == 0 else psutil.Process().username()
    assert server.username() == expected
    assert server.uids().effective != 0


def test_psql_takes_its_arguments_and_standard_input(stack: LaunchedStack) -> None:
    assert psql(stack, "-At", "-c", "select 1") == "1\n"
    assert psql(stack, "-At", stdin="select 40 + 2;\nselect current_user;\n") == "42\npayments\n"


def test_a_killed_database_is_restarted_and_answers_again(stack: LaunchedStack) -> None:
    killed = stack.kill(Part.DATABASE)

    wait_for(lambda: stack.pid(Part.DATABASE) != killed, "the supervisor to restart PostgreSQL")
    wait_for(lambda: answers(stack.settings.ledger_url), "the restarted PostgreSQL to answer")
    assert psql(stack, "-At", "-c", "select 1") == "1\n"


def test_a_second_start_reuses_the_cluster(tmp_path: Path) -> None:
    with LaunchedStack(tmp_path) as first:
        psql(first, "-c", "create table kept (note text); insert into kept values ('from the first start')")
    with LaunchedStack(tmp_path) as second:
        assert psql(second, "-At", "-c", "select note from kept") == "from the first start\n"
    assert (tmp_path / "payments-up.log").read_text().count("created PostgreSQL's cluster") == 1


def test_a_cluster_whose_password_file_is_lost_is_kept_and_refused(tmp_path: Path) -> None:
    with LaunchedDatabase(tmp_path) as first:
        first_settings = first.settings
    first_settings.database_password_file.unlink()

    with pytest.raises(DatabaseError, match=r"holds a PostgreSQL cluster but .* is missing"):
        LaunchedDatabase(tmp_path).start()
    assert (first_settings.database_dir / "PG_VERSION").is_file()


def test_a_creation_cut_short_is_made_again(tmp_path: Path) -> None:
    with LaunchedDatabase(tmp_path) as first:
        first_settings = first.settings
    first_settings.database_password_file.unlink()  # as if the first start died before its last step
    (tmp_path / "postgres.creating").touch()

    with LaunchedDatabase(tmp_path):
        pass

    assert first_settings.database_password_file.is_file()
    assert not (tmp_path / "postgres.creating").exists()


def test_with_a_database_url_no_postgres_is_started(stack: LaunchedStack, tmp_path: Path) -> None:
    elsewhere = {
        "PAYMENTS_DATABASE_URL": stack.settings.ledger_url,
        "PAYMENTS_DATABASE_ADMIN_URL": stack.settings.admin_ledger_url,
    }
    psql(stack, "-c", "create table if not exists marker (); comment on table marker is 'the other stack'")

    with LaunchedStack(tmp_path, env=elsewhere) as beside:
        assert beside.process is not None
        names = {child.name() for child in psutil.Process(beside.process.pid).children(recursive=True)}
        assert "postgres" not in names
        assert not beside.settings.pid_file(Part.DATABASE).exists()
        assert not beside.settings.database_dir.exists()
        marker = psql(beside, "-At", "-c", "select obj_description('marker'::regclass)", env=elsewhere)
        assert marker == "the other stack\n"
