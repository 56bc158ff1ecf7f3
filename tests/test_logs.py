"""Log output: JSON lines a shipper can parse, level filtering, and the config vs the flag."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.logs import StderrHandler, setup_logging
from bot.sinks.telegram import TokenRedactor

# The redactor hides what follows the colon; this is not a token the suite hands the bot.
TOKEN = "4242:logs-test-Secret-Part-Kx7"


@pytest.fixture(autouse=True)
def _drop_installed_log_handler() -> Iterator[None]:
    """Each test sets logging up itself; leave no handler behind for other tests."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)


def json_lines(text: str) -> list[dict]:
    """Every stderr line as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_time_level_logger_and_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", "json")
    before = datetime.now(UTC)
    logging.getLogger("bot.web").info("accepted %s for %s", "live_start", "twitch/quinn")
    lines = json_lines(capsys.readouterr().err)
    assert len(lines) == 1
    line = lines[0]
    assert line["level"] == "INFO"
    assert line["logger"] == "bot.web"
    assert line["message"] == "accepted live_start for twitch/quinn"
    logged_at = datetime.fromisoformat(line["time"])
    assert logged_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= logged_at <= datetime.now(UTC)
    assert "exception" not in line


def test_level_filters_what_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warning", "json")
    log = logging.getLogger("bot.outbox")
    log.info("retrying quietly")
    log.warning("delivery %d failed", 7)
    log.error("gave up")
    messages = [line["message"] for line in json_lines(capsys.readouterr().err)]
    assert messages == ["delivery 7 failed", "gave up"]


def test_an_exception_is_in_the_same_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("bot.app").exception("the worker stopped")
    lines = json_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0]["level"] == "ERROR"
    assert lines[0]["message"] == "the worker stopped"
    assert "Traceback" in lines[0]["exception"]
    assert "ValueError: boom\nsecond line" in lines[0]["exception"]


def test_json_shows_what_a_logger_filter_rewrote(capsys: pytest.CaptureFixture[str]) -> None:
    # The Telegram sink redacts its token by rewriting records on the way (msg, args and
    # exc_text); the formatter must print the rewritten record, not the original parts.
    setup_logging("info", "json")
    log = logging.getLogger("bot.logs-test")
    redactor = TokenRedactor(TOKEN)
    log.addFilter(redactor)
    try:
        log.info("GET %s", f"https://api.telegram.org/bot{TOKEN}/getMe")
        try:
            raise RuntimeError(f"InvalidToken {TOKEN}")
        except RuntimeError:
            log.exception("start-up failed")
    finally:
        log.removeFilter(redactor)
    err = capsys.readouterr().err
    secret = TOKEN.split(":", 1)[1]
    assert secret not in err
    first, second = json_lines(err)
    assert first["message"] == "GET https://api.telegram.org/bot4242:***/getMe"
    assert "InvalidToken 4242:***" in second["exception"]


def test_text_is_the_default_and_setting_up_again_replaces_the_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", "json")
    setup_logging("info", "text")
    logging.getLogger("bot").info("listening on %s", "http://127.0.0.1:8080")
    err = capsys.readouterr().err
    assert err.count("listening on") == 1
    assert " INFO    bot: listening on http://127.0.0.1:8080" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err)
    ours = [h for h in logging.getLogger().handlers if isinstance(h, StderrHandler)]
    assert len(ours) == 1


# A live_end payload with no start time: `render` says so in one INFO line.
PAYLOAD = json.dumps({"id": "e-1", "type": "live_end",
                      "data": {"platform": "twitch", "channel": "quinn", "live_info": {}}})
NO_START = "the payload does not say when the stream started"


def write_config(tmp_path: Path, logging_section: str) -> Path:
    config = tmp_path / "bot.toml"
    config.write_text('[[routes]]\nmatch = "*"\n' + logging_section)
    (tmp_path / "end.json").write_text(PAYLOAD)
    return config


def render_with(tmp_path: Path, config: Path, *flags: str) -> int:
    return main([*flags, "render", "--event", str(tmp_path / "end.json"), "-c", str(config)])


def test_the_config_logging_section_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, '[logging]\nformat = "json"\nlevel = "info"\n')
    assert render_with(tmp_path, config) == 0
    lines = json_lines(capsys.readouterr().err)
    assert [line["message"] for line in lines] == [
        "the payload does not say when the stream started; no duration shown"
    ]


def test_the_log_level_flag_wins_over_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, '[logging]\nformat = "json"\nlevel = "debug"\n')
    assert render_with(tmp_path, config, "--log-level", "warning") == 0
    assert NO_START not in capsys.readouterr().err

    quiet = write_config(tmp_path, '[logging]\nlevel = "error"\n')
    assert render_with(tmp_path, quiet, "--log-level", "info") == 0
    assert NO_START in capsys.readouterr().err
