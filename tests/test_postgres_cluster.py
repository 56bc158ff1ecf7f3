"""The throwaway PostgreSQL server the PostgreSQL store tests run against.

These prove the harness itself: if they fail, a failing PostgreSQL store test says
nothing about the store.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests import postgres_cluster as pgc
from tests.postgres_cluster import PostgresCluster, PostgresClusterError


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_the_cluster_answers_on_its_loopback_port(postgres_cluster: PostgresCluster) -> None:
    assert (
        postgres_cluster.url("x") == f"postgresql://streambot@127.0.0.1:{postgres_cluster.port}/x"
    )
    rows = postgres_cluster.psql("postgres", "select 1, current_user, inet_server_addr()")
    assert rows.split() == ["1|streambot|127.0.0.1"]


def test_each_test_gets_an_empty_database_of_its_own(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    other = postgres_cluster.create_database()
    assert other != postgres_url
    mine = database_of(postgres_url)
    postgres_cluster.psql(mine, "create table only_here (x int)")
    tables = "select count(*) from pg_tables where schemaname = 'public'"
    assert postgres_cluster.psql(mine, tables).strip() == "1"
    assert postgres_cluster.psql(database_of(other), tables).strip() == "0"
    assert postgres_cluster.psql(mine, "show server_encoding").strip() == "UTF8"


def test_the_server_does_not_run_as_root(postgres_cluster: PostgresCluster) -> None:
    """PostgreSQL refuses root; as root the harness runs it as nobody instead."""
    data_dir = postgres_cluster.psql("postgres", "show data_directory").strip()
    assert Path(data_dir) == postgres_cluster.data_dir
    assert os.stat(data_dir).st_uid != 0
    pid = int((postgres_cluster.data_dir / "postmaster.pid").read_text().split()[0])
    assert os.stat(f"/proc/{pid}").st_uid != 0
    assert postgres_cluster.tmp is not None
    assert postgres_cluster.tmp.stat().st_mode & 0o777 == 0o700


def test_unsafe_database_names_are_refused(postgres_cluster: PostgresCluster) -> None:
    with pytest.raises(ValueError, match="not a safe database name"):
        postgres_cluster.create_database("x; drop database postgres")


# -- starting: a second cluster of each test's own, stopped by the test ------------------


def test_a_port_taken_meanwhile_is_retried_with_another(
    postgres_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first port offered is the session cluster's own, so that start must retry."""
    ports = iter([postgres_cluster.port])
    real_free_port = pgc._free_port
    monkeypatch.setattr(pgc, "_free_port", lambda: next(ports, None) or real_free_port())
    cluster = PostgresCluster(postgres_cluster.bindir)
    cluster.start()
    try:
        assert cluster.port != postgres_cluster.port
        assert cluster.psql("postgres", "select 1").strip() == "1"
    finally:
        tmp = cluster.tmp
        cluster.stop()
    assert tmp is not None
    assert not tmp.exists()


def test_a_failed_start_shows_the_server_log_and_leaves_nothing(
    postgres_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that will not start says why (its log), and leaves no directory behind."""
    monkeypatch.setitem(pgc.SERVER_SETTINGS, "no_such_setting", "1")
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(**kwargs: str | None) -> str:
        made.append(real_mkdtemp(**kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    cluster = PostgresCluster(postgres_cluster.bindir)
    with pytest.raises(PostgresClusterError, match="server log tail") as failure:
        cluster.start()
    assert "no_such_setting" in str(failure.value)
    assert cluster.tmp is None
    assert made
    assert not Path(made[0]).exists()
