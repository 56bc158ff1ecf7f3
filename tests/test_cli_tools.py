"""`python -m bot check --online` and `python -m bot test-send`: the real command line, as a
process, against the protocol fakes of Discord and Telegram (and in-process for the
console, which needs no platform)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main
from bot.config import read_config
from bot.instance import InstanceLock
from bot.pipeline.dispatch import Dispatcher
from bot.store.sqlite import SQLiteStore
from tests.fakes.discord_api import (
    FORUM_CHANNEL_ID,
    GENERAL_CHANNEL_ID,
    NO_EMBEDS_CHANNEL_ID,
    READONLY_CHANNEL_ID,
    STAFF_ROLE_ID,
    STREAMERS_ROLE_ID,
    STREAMS_CHANNEL_ID,
    TOKEN,
    FakeDiscord,
    assert_no_heartbeat_threads,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.test_sink_discord import live_start

REPO = Path(__file__).resolve().parents[1]
GROUP = -100777
MISSING = -100404
WRONG_TOKEN = "not-the-bot-token.9f8e7d"  # listed in conftest.KNOWN_SECRETS


@pytest.fixture(autouse=True)
def no_heartbeat_threads_left() -> Any:
    yield
    assert_no_heartbeat_threads()


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN, heartbeat_interval=200) as server:
        yield server


@pytest.fixture
async def telegram_fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        tg.add_chat(GROUP, "supergroup", title="Streams")
        yield tg


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
path = "bot.sqlite3"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "cli-test-key-8d1f"
{body}
""",
        encoding="utf-8",
    )
    return path


def discord_config(
    tmp_path: Path, fake: FakeDiscord, token: str = TOKEN, more: tuple[int, ...] = ()
) -> Path:
    extra = "".join(f'\n[[routes]]\nmatch = "*"\ndiscord_channels = ["{c}"]\n' for c in more)
    return write_config(
        tmp_path,
        f"""
[console]
enabled = false

[discord]
token = "{token}"
api_url = "{fake.api_url}"
gateway_url = "{fake.gateway_url}"

[[routes]]
match = "twitch/*"
discord_channels = ["{STREAMS_CHANNEL_ID}"]
mention_roles = ["{STREAMERS_ROLE_ID}"]

[[routes]]
match = "twitch/quinn"
discord_channels = ["{GENERAL_CHANNEL_ID}"]
{extra}""",
    )


def telegram_config(tmp_path: Path, fake: FakeTelegram, chats: tuple[int, ...]) -> Path:
    listed = ", ".join(f'"{chat}"' for chat in chats)
    return write_config(
        tmp_path,
        f"""
[console]
enabled = false

[telegram]
token = "{fake.token}"
api_url = "{fake.api_url}"

[[routes]]
match = "twitch/*"
telegram_chats = [{listed}]
""",
    )


class Done:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def row(self, *cells: str) -> str:
        """The table line whose first cells are `cells`."""
        for line in self.stdout.splitlines():
            if line.split()[: len(cells)] == list(cells):
                return line
        raise AssertionError(f"no line starting {cells} in:\n{self.stdout}")


async def cli(*args: str, timeout: float = 60) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(proc: asyncio.subprocess.Process, timeout: float = 60) -> Done:
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    done = Done(proc.returncode, stdout.decode(), stderr.decode())
    # Ordinary failures are explained, never a traceback; no token is ever printed.
    assert "Traceback" not in done.stderr, done.stderr
    for secret in (TOKEN, WRONG_TOKEN, "TEST-token-for-the-fake"):
        assert secret not in done.stdout + done.stderr
    return done


def message_posts(fake: FakeDiscord) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/messages")]


# -- check --online ------------------------------------------------------------------------


def test_check_online_with_the_console_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, '[[routes]]\nmatch = "*"\n')
    # A running bot holds the instance lock; the check neither needs nor takes it.
    with InstanceLock(tmp_path / "bot.sqlite3"):
        assert main(["check", "--online", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "console   stdout  OK" in out
    # Without a database the check creates none.
    assert not (tmp_path / "bot.sqlite3").exists()


async def test_check_online_connects_to_discord_and_posts_nothing(
    tmp_path: Path, discord_fake: FakeDiscord
) -> None:
    config = discord_config(tmp_path, discord_fake)
    done = await finished(await cli("check", "--online", "-c", str(config)))
    assert "connecting to discord" in done.stdout
    lines = [done.row("discord", str(c)) for c in (STREAMS_CHANNEL_ID, GENERAL_CHANNEL_ID)]
    # Both channels of the fake's guild take the bot's cards (and the route's role is
    # mentionable): nothing to fix.
    assert all(line.split()[2] == "OK" for line in lines), done.stdout
    assert done.code == 0, done.stdout
    assert message_posts(discord_fake) == []
    assert discord_fake.messages.get(STREAMS_CHANNEL_ID, []) == []


async def test_check_online_names_each_channel_problem_and_fails_on_a_blocking_one(
    tmp_path: Path, discord_fake: FakeDiscord
) -> None:
    more = (READONLY_CHANNEL_ID, FORUM_CHANNEL_ID, NO_EMBEDS_CHANNEL_ID)
    config = discord_config(tmp_path, discord_fake, more=more)
    done = await finished(await cli("check", "--online", "-c", str(config)))
    kinds = {c: done.row("discord", str(c)).split()[2] for c in more}
    assert kinds == {
        READONLY_CHANNEL_ID: "cannot_send",  # @everyone denied Send Messages
        FORUM_CHANNEL_ID: "not_text",
        NO_EMBEDS_CHANNEL_ID: "no_embed_links",  # cards go out as text: a warning
    }
    assert "forum" in done.row("discord", str(FORUM_CHANNEL_ID))
    assert done.code == 1  # two of them cannot be posted to at all
    assert message_posts(discord_fake) == []


async def test_check_online_says_when_a_routes_role_cannot_be_pinged(
    tmp_path: Path, discord_fake: FakeDiscord
) -> None:
    config = discord_config(tmp_path, discord_fake)
    # Staff is not mentionable, and the bot's invite does not ask for Mention Everyone.
    text = config.read_text().replace(
        f'mention_roles = ["{STREAMERS_ROLE_ID}"]', f'mention_roles = ["{STAFF_ROLE_ID}"]'
    )
    config.write_text(text)
    done = await finished(await cli("check", "--online", "-c", str(config)))
    line = done.row("discord", str(STREAMS_CHANNEL_ID))
    assert line.split()[2] == "role_not_pingable", done.stdout
    assert done.row("discord", str(GENERAL_CHANNEL_ID)).split()[2] == "OK"  # no role there
    assert done.code == 0  # the card still goes out: a warning, not a failure


async def test_check_online_fails_when_discord_refuses_the_token(
    tmp_path: Path, discord_fake: FakeDiscord
) -> None:
    config = discord_config(tmp_path, discord_fake, token=WRONG_TOKEN)
    done = await finished(await cli("check", "--online", "--timeout", "3", "-c", str(config)))
    assert done.code == 1
    line = done.row("discord", str(STREAMS_CHANNEL_ID))
    assert "not connected" in line and "did not connect" in line
    assert "refused the bot token" in done.stderr


async def test_check_online_connects_to_telegram_and_reads_the_subscriptions(
    tmp_path: Path, telegram_fake: FakeTelegram
) -> None:
    config = telegram_config(tmp_path, telegram_fake, (GROUP,))
    # A chat added with /subscribe is a target too.
    store = SQLiteStore(tmp_path / "bot.sqlite3")
    await store.open()
    from bot.store import Subscription  # noqa: PLC0415

    await store.add_subscription(Subscription("telegram", str(MISSING), "twitch/*"))
    await store.close()
    done = await finished(await cli("check", "--online", "-c", str(config)))
    assert done.row("telegram", str(GROUP)).split()[2] == "OK", done.stdout
    assert done.row("telegram", str(MISSING)).split()[2] == "not_found"
    assert done.code == 1  # a subscribed chat the bot cannot reach
    assert telegram_fake.calls_to("sendMessage") == []
    assert telegram_fake.calls_to("sendPhoto") == []


# -- test-send -----------------------------------------------------------------------------


async def test_test_send_posts_one_card_without_pings_and_deletes_it(
    tmp_path: Path, discord_fake: FakeDiscord
) -> None:
    config = discord_config(tmp_path, discord_fake)
    proc = await cli("test-send", "--route", "1", "--delete-after", "2", "-c", str(config))
    card = await discord_fake.wait_for_message(STREAMS_CHANNEL_ID, timeout=30)
    # Exactly one message, and it pings nobody: not even the route's role.
    assert len(discord_fake.messages[STREAMS_CHANNEL_ID]) == 1
    assert card["mention_roles"] == [] and card["mentions"] == []
    assert not card["mention_everyone"]
    assert card["embeds"], "a real card, with its embed"
    done = await finished(proc)
    assert done.code == 0, done.stdout + done.stderr
    assert f"posted   discord {STREAMS_CHANNEL_ID}" in done.stdout
    assert f"deleted  discord {STREAMS_CHANNEL_ID}" in done.stdout
    assert discord_fake.messages[STREAMS_CHANNEL_ID] == []
    # Route 1 only: the other route's channel saw nothing.
    assert discord_fake.messages.get(GENERAL_CHANNEL_ID, []) == []
    assert len(message_posts(discord_fake)) == 1
    # It worked without a database and made none.
    assert not (tmp_path / "bot.sqlite3").exists()


async def test_test_send_to_telegram_says_which_chat_failed(
    tmp_path: Path, telegram_fake: FakeTelegram
) -> None:
    config = telegram_config(tmp_path, telegram_fake, (GROUP, MISSING))
    proc = await cli("test-send", "--delete-after", "1", "-c", str(config))
    await telegram_fake.wait_for_message(GROUP, timeout=30)
    assert len(telegram_fake.messages[str(GROUP)]) == 1
    done = await finished(proc)
    assert done.code == 1
    assert f"deleted  telegram {GROUP}" in done.stdout
    assert f"failed   telegram {MISSING}: " in done.stdout
    assert "chat not found" in done.stdout.lower()
    assert telegram_fake.messages[str(GROUP)] == []


async def test_test_send_shows_the_last_real_live_start_and_writes_nothing(
    tmp_path: Path,
) -> None:
    config_path = write_config(tmp_path, '[[routes]]\nmatch = "*"\n')
    config = read_config(config_path)
    store = SQLiteStore(config.storage.path)
    await store.open()
    await Dispatcher(store=store, routes=config.routes, sinks=["console"]).accept(
        live_start("Painting a dragon")
    )
    before = (await store.count_events(), await store.list_deliveries(("sent", "pending")))
    await store.close()

    done = await finished(await cli("test-send", "-c", str(config_path)))
    assert done.code == 0
    assert "posting the last live_start of twitch/quinn" in done.stdout
    assert "Painting a dragon" in done.stdout  # the console printed the card
    assert "printed  console stdout" in done.stdout

    await store.open()
    after = (await store.count_events(), await store.list_deliveries(("sent", "pending")))
    await store.close()
    assert after == before


def test_test_send_refuses_a_route_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, '[[routes]]\nmatch = "*"\n')
    assert main(["test-send", "--route", "2", "-c", str(config)]) == 2
    assert "--route 2: bot.toml has 1 [[routes]]" in capsys.readouterr().err


def test_test_send_refuses_a_chat_no_route_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, '[[routes]]\nmatch = "*"\n')
    assert main(["test-send", "--chat", "12345", "-c", str(config)]) == 1
    assert "--chat 12345 names no target" in capsys.readouterr().err
