"""Log output: JSON lines a shipper can parse, level filtering, and the config vs the flag."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.logs import (
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    MAX_VALUE_CHARS,
    StderrHandler,
    ThrottledLog,
    redact_secrets,
    setup_logging,
)
from bot.sinks.telegram.client import TokenRedactor

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


# -- the guard on the stderr handler: bounded lines, no query secrets ---------------------

QUERY_SECRET = "logs-test-query-Secret-Wq3"


def test_a_long_value_is_cut_where_it_sits_and_the_rest_of_the_line_stays(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", "text")
    channel = "c" * 300_000
    logging.getLogger("bot.web").info("accepted %s for twitch/%s from %s", "s-1", channel, "rec")
    (line,) = capsys.readouterr().err.splitlines()
    assert len(line) < MAX_VALUE_CHARS + 200
    kept, cut_off = "c" * MAX_VALUE_CHARS, 300_000 - MAX_VALUE_CHARS
    assert line.endswith(f"twitch/{kept}...[{cut_off} more characters] from rec")


def test_a_long_message_and_each_traceback_line_are_bounded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", "text")
    log = logging.getLogger("bot.logs-test")
    log.warning("x" * 50_000)  # one long message, no arguments to cut
    log.warning("%s", ["y" * 1000] * 100)  # a long argument that is not a string
    try:
        raise ValueError("z" * 100_000 + "\n" + "w" * 100_000)
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert max(len(line) for line in lines) < MAX_MESSAGE_CHARS + 100
    assert "Traceback (most recent call last):" in lines
    assert any(line.startswith("ValueError: zzz") for line in lines)


def test_a_huge_traceback_keeps_its_start_and_its_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", "json")
    try:
        raise RuntimeError("\n".join(f"line {n}" for n in range(100_000)))
    except RuntimeError:
        logging.getLogger("bot.logs-test").exception("failed")
    (line,) = json_lines(capsys.readouterr().err)
    exception = line["exception"]
    assert len(exception) < MAX_TRACEBACK_CHARS + 100
    assert exception.startswith("Traceback (most recent call last):")
    assert "characters of traceback cut" in exception
    assert exception.endswith("line 99999")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secret_parameters_are_masked_in_any_logger_message_and_traceback(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    setup_logging("debug", fmt)
    log = logging.getLogger("aiohttp.server")  # not the bot's: the guard is on the handler
    log.info("GET /webhook/rec?key=%s&pad=1 HTTP/1.1", QUERY_SECRET)
    try:
        raise ValueError(f"bytearray(b'/webhook/rec?key={QUERY_SECRET}&x=aaa...')")
    except ValueError:
        log.exception("Error handling request from %s", "127.0.0.1")
    logging.getLogger("bot").info("mapping args: %(url)s", {"url": f"/w?key={QUERY_SECRET}"})
    err = capsys.readouterr().err
    assert QUERY_SECRET not in err
    assert "/webhook/rec?key=***&pad=1" in err
    assert "/w?key=***" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/webhook/rec?key=abc", "/webhook/rec?key=***"),
        ("/w?a=1&key=abc#frag", "/w?a=1&key=***#frag"),
        ("b'/w?KEY=abc' seen", "b'/w?KEY=***' seen"),
        ("token key=abc, then more", "token key=*** then more"),
        (
            "?api_key=a&access_token=b&X-Amz-Signature=c&hub.secret=d&password=e",
            "?api_key=***&access_token=***&X-Amz-Signature=***&hub.secret=***&password=***",
        ),
        # An invite link stays usable.
        (
            "authorize?client_id=12&scope=bot+applications.commands&permissions=3",
            "authorize?client_id=12&scope=bot+applications.commands&permissions=3",
        ),
        ("no secrets = here", "no secrets = here"),
        ("?key=***", "?key=***"),
    ],
)
def test_redact_secrets(text: str, expected: str) -> None:
    assert redact_secrets(text) == expected


def test_a_percent_in_a_cut_value_is_not_taken_for_a_placeholder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", "text")
    logging.getLogger("bot").info("title %s, %d%%", "100%s " * 1000, 7)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("more characters], 7%")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_throttled_log_writes_a_burst_then_one_summary_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    throttled = ThrottledLog(
        logging.getLogger("bot.logs-test"), "bad things", burst=2, window=60, clock=clock
    )
    with caplog.at_level(logging.INFO, "bot.logs-test"):
        logged = [throttled.log("bad thing %d", n) for n in range(5)]
        clock.now += 61
        logged.append(throttled.log("bad thing %d", 5))
    assert logged == [True, True, False, False, False, True]
    assert [r.getMessage() for r in caplog.records] == [
        "bad thing 0",
        "bad thing 1",
        "further bad things are summarised for the next 60s",
        "3 more bad things were not logged in the last 61s",
        "bad thing 5",
    ]


def test_a_throttled_log_below_the_level_costs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    throttled = ThrottledLog(
        logging.getLogger("bot.logs-test"), "probes", level=logging.DEBUG, burst=1, clock=_Clock()
    )
    with caplog.at_level(logging.INFO, "bot.logs-test"):
        assert not any(throttled.log("probe %d", n) for n in range(10))
    assert caplog.records == []


# A live_end payload with no start time: `render` says so in one INFO line.
PAYLOAD = json.dumps(
    {
        "id": "e-1",
        "type": "live_end",
        "data": {"platform": "twitch", "channel": "quinn", "live_info": {}},
    }
)
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
