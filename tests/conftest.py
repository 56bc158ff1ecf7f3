"""Shared fixtures: configs built the way users write them, and a store under tmp_path."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, load_config
from bot.store import Store
from bot.store.sqlite import SQLiteStore
from tests.postgres_cluster import PostgresCluster, find_bindir

SECRET = "s3cr3t-key-for-tests-Zq9"


def make_config(tmp_path: Path, **sections: Any) -> Config:
    """A Config from TOML-shaped sections over a minimal OneLiveRec + console setup."""
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "storage": {"path": str(tmp_path / "bot.sqlite3")},
        "sources": [{"name": "rec", "kind": "onliverec", "secret": SECRET}],
        "routes": [{"match": "*"}],
        # Ends are announced at once unless a test is about the grace period.
        "behaviour": {"end_grace": "0s"},
    }
    data.update(sections)
    return load_config(data, environ={}, base_dir=tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The minimal config: one OneLiveRec source named `rec`, console, one catch-all route."""
    return make_config(tmp_path)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """An open, migrated store in a temporary file."""
    db = SQLiteStore(tmp_path / "state.sqlite3")
    await db.open()
    yield db
    await db.close()


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-telegram-bot's RetryAfter warns (an error here) unless PTB_TIMEDELTA is set.

    RetryAfter.__init__ reads its own deprecated int property; under filterwarnings=error
    that warning replaces the 429, so AIORateLimiter would never retry. With the opt-in,
    ``RetryAfter.retry_after`` is a timedelta.
    """
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


# -- no secret in any log line -------------------------------------------------------------

# Every secret and token the suite hands the bot. Spelled out here (not imported) so the
# check needs no test module; a test that adds a new one should list it.
KNOWN_SECRETS: tuple[str, ...] = (
    SECRET,
    "cli-test-key-8d1f",  # test_cli.KEY
    "lp-secret-4f7a",  # test_app.LIVEPEER_SECRET
    "ZmFzdHBpeC1zaWduaW5nLWtleS1ieXRlcy0wMTIzNDU2",  # test_app.FASTPIX_SECRET
    # test_source_fastpix.SECRET, as pasted without its padding (a part of the padded one).
    "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY",
    "-__7__v_-__7__v_-__7__v_-__7__v_-__7__v_-_8",  # test_source_fastpix.URL_SAFE_KEY, unpadded
    "+//7//v/+//7//v/+//7//v/+//7//v/+//7//v/+/8",  # ... and in standard base64, unpadded
    "lp-webhook-secret-1234",  # test_source_livepeer.SECRET
    "s3cr3t-Zebra-Quokka-9931",  # test_config.SECRET
    "t0ken-Narwhal-Okapi-4417",  # test_config.TOKEN
    "TEST-token-for-the-fake",  # fakes.telegram_api default token (secret part)
    "fake-bot-token.for-tests",  # fakes.discord_api.TOKEN
    "not-the-bot-token.9f8e7d",  # test_sink_discord.WRONG_TOKEN
    "WRONG-secret-token",  # test_sink_telegram: a token the API refuses
    "metrics-bearer-Ibis-Tapir-7305",  # test_metrics.TOKEN
)


class _SecretWatch(logging.Handler):
    """Remembers every log line (message and traceback) that contains a known secret."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string is some other test's business
            text = f"{record.msg} {record.args}"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        text += record.exc_text or ""
        for secret in KNOWN_SECRETS:
            if secret in text:
                self.leaks.append(f"{record.name} {record.levelname}: {text[:300]}")


@pytest.fixture(autouse=True)
def _no_secret_in_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test during which a log line, at any level, carries a known secret.

    The root logger is opened to DEBUG for the test so even debug lines are checked;
    the bot's own guards (the Telegram sink holding httpx at WARNING) still apply.
    Tests of the protocol fakes drive the client libraries without the bot's guards,
    so they are not the bot's logs and are left out.
    """
    if request.node.path.name.startswith("test_fake_"):
        yield
        return
    root = logging.getLogger()
    watch = _SecretWatch()
    level = root.level
    root.addHandler(watch)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(watch)
    assert not watch.leaks, "secrets in log lines:\n" + "\n".join(watch.leaks)


# -- a throwaway PostgreSQL server -----------------------------------------------------------

# Tests that asked for a PostgreSQL database and were skipped; in CI that fails the run
# (pytest_sessionfinish below), so a broken install cannot pass as "all green, 40 skipped".
POSTGRES_SKIPS: list[str] = []

_POSTGRES_FIXTURES = ("postgres_url", "postgres_cluster")


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the whole run, started the first time a test needs it.

    Without the server binaries the PostgreSQL tests skip on a developer's machine, but
    fail in CI: there they must run, and .ci/run installs the server to make sure they can.
    """
    bindir = find_bindir()
    if bindir is None:
        if _in_ci():
            pytest.fail(
                "CI must run the PostgreSQL tests, but no PostgreSQL server binaries "
                "(initdb, pg_ctl) were found; .ci/run installs Debian's postgresql package"
            )
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl) found: "
            "install them with `apt-get install postgresql` to run the PostgreSQL tests"
        )
    cluster = PostgresCluster(bindir)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """The URL of a fresh, empty database of its own for this test, dropped afterwards
    (by then the test's store has closed; --force closes whatever it left open)."""
    name = postgres_cluster.new_database_name()
    url = postgres_cluster.create_database(name)
    yield url
    postgres_cluster.drop_database(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Note each skip of a test that uses the PostgreSQL fixtures, whatever skipped it.

    Recorded from the reports rather than in the fixture: a session fixture that skips
    runs once, and pytest replays that skip to every later test without calling it again.
    """
    report = yield
    uses_postgres = any(name in getattr(item, "fixturenames", ()) for name in _POSTGRES_FIXTURES)
    if report.skipped and uses_postgres and not hasattr(report, "wasxfail"):
        POSTGRES_SKIPS.append(item.nodeid)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, a skipped PostgreSQL test fails the run (the summary below says which)."""
    if _in_ci() and POSTGRES_SKIPS and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name the skipped PostgreSQL tests, so the failed CI run says why it failed."""
    if _in_ci() and POSTGRES_SKIPS:
        terminalreporter.write_sep("=", "PostgreSQL tests skipped in CI", red=True)
        terminalreporter.write_line(
            "CI must run every PostgreSQL test (CI is set), so this run fails; skipped:"
        )
        for nodeid in POSTGRES_SKIPS:
            terminalreporter.write_line(f"  {nodeid}")
