"""What only the PostgreSQL store has to prove beyond the contract suite (which it passes
unchanged, tests/test_store_contract.py): several stores on one database, as several
bot processes are, never claim one delivery twice and never interleave transactions;
passwords stay out of every message; a read-only or unreachable server is
StoreUnavailable, not a crash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from bot.config import load_config
from bot.errors import ConfigError, StoreUnavailable
from bot.events import Event, LiveInfo
from bot.store import Delivery, NewDelivery, SessionMarks, StreamState, redacted
from bot.store.migrations import MIGRATIONS
from bot.store.postgres import ROLE_LOCKS, WRITE_LOCK, PostgresStore
from bot.store.postgres_schema import POSTGRES_MIGRATIONS
from tests.conftest import SECRET
from tests.test_cli import running_bot
from tests.test_reliability import live_start, post

T0 = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


def event(event_id: str) -> Event:
    return Event(
        source="rec",
        event_id=event_id,
        kind="live_start",
        occurred_at=T0,
        received_at=T0,
        platform="twitch",
        channel="quinn",
        live=LiveInfo(title="Painting"),
    )


def test_the_schemas_are_numbered_alike() -> None:
    """Schema N is the same tables in SQLite and PostgreSQL (`store migrate` relies on it)."""
    assert len(POSTGRES_MIGRATIONS) == len(MIGRATIONS)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://bot:s3cr3t@db.example:5433/bot",
            "postgresql://bot:***@db.example:5433/bot",
        ),
        ("postgresql://bot@db.example/bot", "postgresql://bot@db.example/bot"),
        ("postgresql://:s3cr3t@[::1]/bot", "postgresql://***@[::1]/bot"),
    ],
)
def test_a_password_in_the_url_is_never_shown(url: str, shown: str) -> None:
    assert redacted(url) == shown
    assert PostgresStore(url).location == shown


async def test_an_unreachable_server_is_unavailable_and_says_so_without_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = PostgresStore(f"postgresql://bot:s3cr3t@127.0.0.1:{port}/bot")
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert "s3cr3t" not in str(info.value)
    assert not store.health.ok and "s3cr3t" not in (store.health.error or "")
    await store.close()


async def test_stores_on_one_database_never_claim_one_delivery_twice(postgres_url: str) -> None:
    """Three processes' outbox workers claiming at once: every row goes to exactly one."""
    stores = [PostgresStore(postgres_url) for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        row = await stores[0].insert_event(event("e1"))
        assert row is not None
        for n in range(300):
            await stores[0].add_delivery(
                event_row=row, sink="discord", target=f"chat{n}", not_before=0, now=0
            )

        async def claim_all(store: PostgresStore) -> list[int]:
            got: list[int] = []
            while batch := await store.claim_due("discord", now=1, limit=7):
                got.extend(d.id for d in batch)
                await asyncio.sleep(0)
            return got

        claimed = await asyncio.gather(*(claim_all(s) for s in stores))
        every = [d for batch in claimed for d in batch]
        assert len(every) == len(set(every)) == 300
        assert all(claimed), "each store got a share"
    finally:
        for store in stores:
            await store.close()


async def test_claims_made_at_once_never_give_one_chats_rows_to_two_processes(
    postgres_url: str,
) -> None:
    """A chat's messages go out in order because one process at a time sends to it:
    while a claimed row's lease lives, nobody claims the chat's next rows. Claims race
    here from three processes; each chat must end up with one row claimed, by one of
    them. (A claim that checked an older snapshot than its lock's would give a chat's
    second row to a second process.)"""
    stores = [PostgresStore(postgres_url, owner=f"process {n}") for n in range(3)]
    for store in stores:
        await store.open()
    try:
        row = await stores[0].insert_event(event("e1"))
        assert row is not None
        chats = [f"chat{n}" for n in range(8)]
        queued: dict[str, list[int]] = {chat: [] for chat in chats}
        for n in range(160):
            chat = chats[n % len(chats)]
            queued[chat].append(
                await stores[0].add_delivery(
                    event_row=row,
                    sink="discord",
                    target=chat,
                    action=f"edit{n}",
                    not_before=0,
                    now=0,
                )
            )

        async def claim_a_while(store: PostgresStore) -> list[Delivery]:
            got: list[Delivery] = []
            for _ in range(30):
                got += await store.claim_due("discord", now=1, limit=1)
            return got

        claimed = await asyncio.gather(*(claim_a_while(s) for s in stores))
        by_chat: dict[str, list[tuple[int, int]]] = {}
        for n, batch in enumerate(claimed):
            for d in batch:
                by_chat.setdefault(d.target, []).append((n, d.id))
        assert sorted(by_chat) == chats
        assert all(len(got) == 1 for got in by_chat.values()), by_chat
        # And each chat's first row, whichever process took it.
        assert {chat: got[0][1] for chat, got in by_chat.items()} == {
            chat: ids[0] for chat, ids in queued.items()
        }
    finally:
        for store in stores:
            await store.close()


async def test_a_role_that_may_make_no_temporary_objects_still_claims(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A claim on its own is one statement by a function of the connection's temporary
    schema; a database that refuses its role temporary objects gets transactions."""
    owner = PostgresStore(postgres_url)
    await owner.open()  # migrated by the owner of the database
    await owner.close()
    admin = await asyncpg.connect(postgres_url)
    database = await admin.fetchval("SELECT current_database()")
    role = f"no_temp_{database}"
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    await admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
    await admin.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    await admin.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
    parts = urlsplit(postgres_url)
    plain = PostgresStore(
        urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@')[-1]}"))
    )
    try:
        await plain.open()
        row = await plain.insert_event(event("e1"))
        assert row is not None
        ids = [
            await plain.add_delivery(
                event_row=row, sink="discord", target=f"chat{n}", not_before=0, now=0
            )
            for n in range(3)
        ]
        with caplog.at_level(logging.INFO, logger="bot.store.postgres"):
            first = await plain.claim_due("discord", now=1, limit=2)
            second = await plain.claim_due("discord", now=1, limit=2)
        assert [d.id for d in first + second] == ids
        said = [r.getMessage() for r in caplog.records if "TEMPORARY" in r.getMessage()]
        assert len(said) == 1, said  # said once, not at every claim
        assert "three round trips" in said[0]
    finally:
        await plain.close()
        await admin.execute(f'GRANT TEMPORARY ON DATABASE "{database}" TO PUBLIC')
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


async def test_the_pool_is_opened_at_start_and_knows_the_stores_types_from_the_first_query(
    postgres_url: str,
) -> None:
    """A notification is often the first query in an hour: its connection must not be
    opened then, nor look up the types of its statements in the catalog (asyncpg does,
    once per connection and type: some 5 ms each, before the webhook's 202)."""
    store = PostgresStore(postgres_url, pool_max=3)
    await store.open()
    watcher = await asyncpg.connect(postgres_url)
    try:
        opened = await watcher.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = 'streambot'"""
        )
        assert opened == 3
        queries: list[str] = []
        pool = store._pool  # its own connections are watched
        assert pool is not None
        held = [await pool.acquire() for _ in range(3)]
        for conn in held:
            conn.add_query_logger(lambda record: queries.append(record.query))
        for conn in held:
            await pool.release(conn)
        for n in range(3):  # a first webhook, dispatch and send on each connection
            row = await store.insert_event(event(f"e{n}"), raw=b"{}", dispatched=False)
            assert row is not None
            await store.mark_many_dispatched([(row, event(f"e{n}"), True)])
            await store.add_deliveries([NewDelivery(row, "discord", "1", not_before=0)], now=0)
            [claimed] = await store.claim_due("discord", now=1)
            await store.mark_sent(claimed.id, message_id="m", now=1)
        assert queries, "the connections were watched"
        assert not [q for q in queries if "typeinfo" in q]
    finally:
        await watcher.close()
        await store.close()


async def test_write_transactions_of_two_stores_run_one_after_the_other(postgres_url: str) -> None:
    """A read-then-write transaction (the dispatch stage's) is never interleaved with
    another process's: the second waits for the first to commit, then sees its write."""
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await first.open()
    await second.open()
    key = "twitch/quinn"
    state = StreamState(key, "Quinn", None, False, LiveInfo(), None, None, T0)
    await first.save_streams([state], now=T0)
    order: list[str] = []
    inside = asyncio.Event()

    async def slow_writer() -> None:
        async with first.transaction():
            order.append("first in")
            inside.set()
            await first.save_streams(
                [replace(state, marks=SessionMarks(change_posted_at=1.0))], now=T0
            )
            await asyncio.sleep(0.5)  # only to prove the other waits; never in real code
            order.append("first out")

    async def reader_writer() -> None:
        await inside.wait()
        async with second.transaction():
            order.append("second in")
            seen = await second.get_stream(key)
            assert seen is not None and seen.marks.change_posted_at == 1.0
            await second.save_streams(
                [replace(seen, marks=SessionMarks(change_posted_at=2.0))], now=T0
            )

    try:
        await asyncio.gather(slow_writer(), reader_writer())
        assert order == ["first in", "first out", "second in"]
        stored = await first.get_stream(key)
        assert stored is not None and stored.marks.change_posted_at == 2.0
    finally:
        await first.close()
        await second.close()


async def test_a_failed_transaction_is_rolled_back_on_its_own_connection(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transactions are begun and ended by hand (BEGIN and the write lock in one round
    trip): one that times out waiting for the lock, or whose block raises, is rolled
    back before its connection goes back to the pool, so the connection's next user is
    outside any transaction and the half-done write is gone."""
    monkeypatch.setattr("bot.store.postgres.LOCK_TIMEOUT", "200ms")
    holder, waiter = PostgresStore(postgres_url), PostgresStore(postgres_url, pool_max=1)
    await holder.open()
    await waiter.open()
    loop = asyncio.get_running_loop()
    resets: list[str] = []  # asyncpg says here when it finds a transaction left open
    loop.set_exception_handler(lambda _loop, context: resets.append(context["message"]))
    key = "twitch/quinn"
    state = StreamState(key, "Quinn", None, False, LiveInfo(), None, None, T0)
    try:
        other = await asyncpg.connect(postgres_url)  # another process, in a transaction
        try:
            await other.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            with pytest.raises(StoreUnavailable) as timed_out:
                async with waiter.transaction():
                    raise AssertionError("the lock is held by the other process")
        finally:
            await other.close()
        assert timed_out.value.busy
        with pytest.raises(RuntimeError, match="block failed"):
            async with waiter.transaction():
                await waiter.save_streams([state], now=T0)
                raise RuntimeError("the block failed")
        assert await holder.get_stream(key) is None
        # On the one pooled connection again, and a savepoint in it as the dispatcher's.
        async with waiter.transaction(), waiter.savepoint():
            await waiter.save_streams([state], now=T0)
        assert await holder.get_stream(key) is not None
        assert resets == []
    finally:
        loop.set_exception_handler(None)
        await holder.close()
        await waiter.close()


async def test_intake_inserts_of_two_stores_run_side_by_side_and_dedupe(
    postgres_url: str,
) -> None:
    """The intake's transactions (`serial=False`) do not wait for another process's: one
    holding a serial transaction open does not hold up the other's webhooks; the same
    event inserted by both at once is stored once, the second told it is a duplicate."""
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await first.open()
    await second.open()
    release = asyncio.Event()
    holding = asyncio.Event()

    async def long_serial_transaction() -> None:
        async with first.transaction():
            await first.insert_event(event("held"), dispatched=False)
            holding.set()
            await release.wait()

    async def intake(store: PostgresStore, event_id: str) -> int | None:
        async with store.transaction(serial=False):
            return await store.insert_event(event(event_id), dispatched=False)

    try:
        held = asyncio.create_task(long_serial_transaction())
        await holding.wait()
        # Would wait for the write lock (and time out here) if the intake took it.
        assert await asyncio.wait_for(intake(second, "beside"), 5) is not None
        release.set()
        await held

        async def both_at_once(store: PostgresStore) -> int | None:
            async with store.transaction(serial=False):
                row = await store.insert_event(event("twice"), dispatched=False)
                await asyncio.sleep(0.2)  # both inside before either commits
                return row

        rows = await asyncio.gather(both_at_once(first), both_at_once(second))
        assert sorted(r is None for r in rows) == [False, True]
        assert [e.event_id for _row, e in await first.undispatched()] == [
            "held",
            "beside",
            "twice",
        ]
    finally:
        await first.close()
        await second.close()


async def test_a_read_only_store_refuses_writes_as_unavailable(postgres_url: str) -> None:
    writer = PostgresStore(postgres_url)
    await writer.open()
    await writer.close()
    reader = PostgresStore(postgres_url, read_only=True)
    await reader.open()
    try:
        assert await reader.schema_version() == len(POSTGRES_MIGRATIONS)
        with pytest.raises(StoreUnavailable) as info:
            await reader.insert_event(event("e2"))
        assert info.value.code == "25006"
        assert not reader.health.ok
        assert (await reader.check()).startswith("error: 25006")
    finally:
        await reader.close()


async def test_two_processes_starting_at_once_migrate_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        versions = {await s.schema_version() for s in stores}
        assert versions == {len(POSTGRES_MIGRATIONS)}
    finally:
        for store in stores:
            await store.close()


# -- [storage] url ----------------------------------------------------------------------------


def storage(keys: dict[str, object], environ: dict[str, str] | None = None) -> Any:
    data = {"storage": keys}
    return load_config(data, environ=environ or {}, base_dir=Path("/srv/bot")).storage


def storage_problems(keys: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        storage(keys, environ)
    return list(info.value.problems)


def test_a_url_selects_postgresql_with_its_password_from_the_environment() -> None:
    chosen = storage(
        {"url": "postgresql://bot@db.example/bot", "password_env": "BOT_DB_PASSWORD"},
        {"BOT_DB_PASSWORD": "hunter2-but-longer"},
    )
    assert chosen.url == "postgresql://bot@db.example/bot"
    assert chosen.password == "hunter2-but-longer"
    assert "hunter2" not in repr(chosen)
    inline = storage({"url": "postgresql://bot:pa55word@db.example/bot"})
    assert inline.location == "postgresql://bot:***@db.example/bot"
    assert "pa55word" not in repr(inline)
    assert storage({}).url is None  # SQLite stays the default


@pytest.mark.parametrize(
    ("keys", "environ", "expected"),
    [
        (
            {"url": "postgresql://bot@db/bot", "path": "bot.sqlite3"},
            {},
            "storage: set path (an SQLite file) or url (PostgreSQL), not both",
        ),
        (
            {"url": "mysql://bot:pa55word@db/bot"},
            {},
            "storage.url: must be a postgresql:// URL (scheme mysql://)",
        ),
        ({"url": "postgresql://bot@db"}, {}, "storage.url: names no database"),
        ({"url": "postgresql://bot@db:port/bot"}, {}, "storage.url: is not a URL"),
        (
            {"url": "postgresql://bot@db/bot", "password_env": "NOT_SET"},
            {},
            "storage.password_env: environment variable NOT_SET is not set",
        ),
        (
            {"url": "postgresql://bot:pa55word@db/bot", "password_env": "DB_PASSWORD"},
            {"DB_PASSWORD": "x"},
            "storage: the url has a password and password_env names one",
        ),
        (
            {"password_env": "DB_PASSWORD"},
            {"DB_PASSWORD": "x"},
            "storage.password_env: is for url",
        ),
    ],
)
def test_storage_mistakes_are_named_by_key_and_never_echo_the_password(
    keys: dict[str, object], environ: dict[str, str], expected: str
) -> None:
    found = storage_problems(keys, environ)
    assert any(problem.startswith(expected) for problem in found), found
    assert not any("pa55word" in problem for problem in found)


# -- through `python -m bot run` -------------------------------------------------------------


def run_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "bot.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0

[storage]
url = "{url}"
password_env = "STREAMBOT_TEST_DB_PASSWORD"

[behaviour]
end_grace = "0s"

[[sources]]
name = "rec"
kind = "onliverec"
secret = "{SECRET}"

[[routes]]
match = "*"
"""
    )
    return config


async def test_two_bots_run_on_one_postgresql_database(tmp_path: Path, postgres_url: str) -> None:
    """`python -m bot run` twice on [storage] url: both take webhooks, an event taken by one
    is a duplicate at the other, the card is printed once (by whichever process claimed
    it), one survives the other's kill -9, and the password is in no line either prints."""
    config = run_config(tmp_path, postgres_url)
    env = {"STREAMBOT_TEST_DB_PASSWORD": "unused-by-trust-auth-9Zq"}
    start = live_start("quinn", "On PostgreSQL")
    async with running_bot(config, env=env) as first, running_bot(config, env=env) as second:
        await first.wait_for("stderr", "2 bot processes share the database")
        assert (await post(first.url, start)).status == 202
        assert (await post(second.url, start)).status == 200  # the same event: a duplicate
        card = r"\[live_start\] Quinn is live"
        async with asyncio.timeout(15):
            while not re.search(card, first.stdout + second.stdout):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert len(re.findall(card, first.stdout + second.stdout)) == 1
        first.proc.kill()
        await first.proc.wait()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{second.url}/healthz") as response,
        ):
            health = await response.json()
        assert health["ok"] is True and health["database"] == "ok", health
        assert (await post(second.url, live_start("ada", "Still here"))).status == 202
        await second.wait_for("stdout", r"\[live_start\] Ada is live")
        assert await second.stop() == 0
    assert (
        "unused-by-trust-auth" not in first.stdout + first.stderr + second.stdout + second.stderr
    )


# -- leases: several processes sharing the outbox ---------------------------------------------


@contextlib.asynccontextmanager
async def two_processes(
    url: str, *, lease: float = 60
) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """The stores of two bot processes on one database, A's id before B's."""
    a = PostgresStore(url, owner="host-a:1:aaaa", lease=lease)
    b = PostgresStore(url, owner="host-b:2:bbbb", lease=lease)
    await a.open()
    try:
        await b.open()
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


async def test_a_chat_is_sent_to_by_one_process_and_a_dead_ones_claims_move_on(
    postgres_url: str,
) -> None:
    """Process A claims chat X's first message; B, claiming meanwhile, leaves X alone (its
    messages must stay in order) but takes chat Y. A keeps its claim alive by its
    heartbeat; once A is silent past the lease, B takes X's messages over, the first one
    with another attempt counted. B's next look at the outbox is when that can be."""
    async with two_processes(postgres_url) as (a, b):
        row = await a.insert_event(event("e1"))
        assert row is not None
        first = await a.add_delivery(
            event_row=row, sink="telegram", target="X", not_before=0, now=0
        )
        await a.add_delivery(
            event_row=row, sink="telegram", target="X", action="edit", not_before=0, now=0
        )
        y = await a.add_delivery(event_row=row, sink="telegram", target="Y", not_before=0, now=0)
        [claimed] = await a.claim_due("telegram", now=100, limit=1)
        assert claimed.id == first
        assert [d.id for d in await b.claim_due("telegram", now=101)] == [y]
        await b.mark_sent(y, message_id="77", now=101)
        assert await b.claim_due("telegram", now=102) == []  # X is A's while A lives
        # ...and B does not wait for X's edit as if it were due now (that would have it
        # look at the outbox in a loop), only for A's lease to run out.
        assert await b.next_due("telegram", now=102) == 160
        assert await a.heartbeat(now=150) == 1
        assert await b.heartbeat(now=150) == 2  # both alive: each takes half the limits
        await a.heartbeat(now=150)
        # They agree on who is first (by id), so the parts of a limit add up to it.
        assert sorted([a.rank, b.rank]) == [0, 1]
        assert (a.rank == 0) == (a.owner < b.owner)
        assert await b.claim_due("telegram", now=200) == []  # renewed at 150: until 210
        assert await b.next_due("telegram", now=200) == 210
        assert await b.next_due("telegram", now=211) == 0  # A is silent: X's rows are due
        taken = await b.claim_due("telegram", now=211)
        # The post first, another attempt counted, then the edit after it, in order.
        assert [(d.action, d.attempts) for d in taken] == [("post", 2), ("edit", 1)]
        assert taken[0].id == first
        assert await b.heartbeat(now=211 + 61) == 1  # A is forgotten
        assert b.rank == 0  # and B is the first now


async def test_a_process_that_joins_knows_which_others_have_counted_it(
    postgres_url: str,
) -> None:
    """B joins at 101: A, whose last heartbeat was before that, may not have counted B
    yet; once A beats again it has. A silent for `quiet` seconds (killed, say) is not
    waited for, and B's own row never is."""
    async with two_processes(postgres_url) as (a, b):
        await a.heartbeat(now=100)
        assert await b.heartbeat(now=101) == 2
        assert await b.unaware_of(101, now=101.5, quiet=4) == 1
        assert await a.heartbeat(now=102) == 2  # A counts B here
        assert await b.unaware_of(101, now=102.5, quiet=4) == 0
        # A beats no more (killed): after `quiet` seconds a joiner stops waiting for it.
        assert await b.unaware_of(103, now=105.5, quiet=4) == 1
        assert await b.unaware_of(103, now=106.5, quiet=4) == 0


async def test_a_process_that_stops_is_not_counted_by_the_others_any_longer(
    postgres_url: str,
) -> None:
    """Its share of the limits is the others' from their next heartbeat, not once its
    row is older than the lease."""
    async with two_processes(postgres_url) as (a, b):
        await a.heartbeat(now=100)
        assert await b.heartbeat(now=100) == 2
        await a.close()
        assert await b.heartbeat(now=101) == 1


async def test_a_groups_forum_topics_are_sent_to_by_one_process_at_a_time(
    postgres_url: str,
) -> None:
    """Telegram counts a group's messages together, forum topics included, and the
    process sending there keeps the count: while A sends to one topic, B takes no
    other topic of that group (a chat whose id merely starts alike is another chat),
    and it takes them once A's send is over."""
    async with two_processes(postgres_url) as (a, b):
        row = await a.insert_event(event("e1"))
        assert row is not None
        ids = {
            target: await a.add_delivery(
                event_row=row, sink="telegram", target=target, not_before=0, now=0
            )
            for target in ("-100/7", "-100/8", "-100", "-1001/8")
        }
        [claimed] = await a.claim_due("telegram", now=100, limit=1)
        assert claimed.id == ids["-100/7"]
        assert [d.target for d in await b.claim_due("telegram", now=101)] == ["-1001/8"]
        assert await b.next_due("telegram", now=101) == 160  # A's lease, not now
        await a.mark_sent(claimed.id, message_id="5", now=102)
        taken = await b.claim_due("telegram", now=103)
        assert [d.target for d in taken] == ["-100/8", "-100"]


async def test_a_late_senders_outcome_is_neither_waited_for_nor_overwritten(
    postgres_url: str,
) -> None:
    """Process A stalled past its lease with chat X's message claimed; B takes the lapsed
    claim over just as A, awake again, records that the message went out. B's claim must
    not wait for A's write (B's other chats would wait with it) nor, once A's write is
    in, turn the sent message back into one to send: chat X would get it twice."""
    late_sender = await asyncpg.connect(postgres_url)
    try:
        async with two_processes(postgres_url, lease=10) as (a, b):
            row = await a.insert_event(event("e1"))
            assert row is not None
            x = await a.add_delivery(
                event_row=row, sink="discord", target="X", not_before=0, now=0
            )
            y = await a.add_delivery(
                event_row=row, sink="discord", target="Y", not_before=0, now=0
            )
            [claimed] = await a.claim_due("discord", now=100, limit=1)
            assert claimed.id == x
            # A's mark_sent, caught between its UPDATE and its commit.
            writing = late_sender.transaction()
            await writing.start()
            await late_sender.execute(
                "UPDATE deliveries SET state = 'sent', message_id = '55' WHERE id = $1", x
            )
            claim = asyncio.ensure_future(b.claim_due("discord", now=200))
            done, _ = await asyncio.wait({claim}, timeout=5)
            assert claim in done, "B's claim waited for A's write"
            assert [d.id for d in claim.result()] == [y]
            await writing.commit()
            assert await b.claim_due("discord", now=201) == []
            assert await b.delivery_status(x) == ("sent", "55")
    finally:
        await late_sender.close()


async def test_a_restart_requeues_only_what_a_dead_process_left(postgres_url: str) -> None:
    live = PostgresStore(postgres_url, owner="host-a:1:aaaa", lease=3600)
    await live.open()
    try:
        row = await live.insert_event(event("e1"))
        assert row is not None
        await live.add_delivery(event_row=row, sink="discord", target="1", not_before=0, now=0)
        [mine] = await live.claim_due("discord", now=time.time())
        starting = PostgresStore(postgres_url, owner="host-b:2:bbbb")
        await starting.open()
        try:
            assert await starting.requeue_in_flight() == 0  # A is sending it right now
        finally:
            await starting.close()
        assert await live.delivery_status(mine.id) == ("sending", None)
    finally:
        await live.close()


async def test_check_reads_a_database_no_bot_has_run_on_yet(
    tmp_path: Path, postgres_url: str
) -> None:
    """`check` only reads (it never creates tables a bot may be about to create): on an
    empty database it finds nothing moved and says so without a traceback."""
    reader = PostgresStore(postgres_url, read_only=True)
    await reader.open()
    try:
        assert await reader.schema_version() == 0
        assert await reader.moved_targets() == {}
        assert await reader.source_value("kick", "public_key") is None
    finally:
        await reader.close()
    config = run_config(tmp_path, postgres_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "check",
        "-c",
        str(config),
        env={**os.environ, "STREAMBOT_TEST_DB_PASSWORD": "x-unused-by-trust"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    again = PostgresStore(postgres_url, read_only=True)
    await again.open()
    try:
        assert await again.schema_version() == 0  # check created nothing
    finally:
        await again.close()


async def test_a_role_is_held_by_one_process_and_passes_on_when_it_is_gone(
    postgres_url: str,
) -> None:
    """Telegram's poller (say): A has it, B is told no while A lives, and gets it as soon
    as A's process is gone; roles are independent of each other."""
    a = PostgresStore(postgres_url, owner="host-a:1:aaaa")
    b = PostgresStore(postgres_url, owner="host-b:2:bbbb")
    await a.open()
    await b.open()
    try:
        assert await a.hold_role("telegram-updates")
        assert not await b.hold_role("telegram-updates")
        assert await a.hold_role("telegram-updates")  # still A's
        assert await b.hold_role("sources")  # another role: free
        await b.release_role("sources")  # given up (a Discord shard, rebalanced)...
        assert await a.hold_role("sources")  # ...the next to ask takes it
        await b.release_role("sources")  # not B's: nothing happens
        assert not await b.hold_role("sources")
        await a.close()  # the process ends (or dies: its connection goes either way)
        assert await b.hold_role("telegram-updates")
    finally:
        await a.close()
        await b.close()


async def test_a_role_lost_with_its_connection_is_said_and_asked_for_anew(
    postgres_url: str,
) -> None:
    a = PostgresStore(postgres_url, owner="host-a:1:aaaa")
    b = PostgresStore(postgres_url, owner="host-b:2:bbbb")
    await a.open()
    await b.open()
    try:
        assert await a.hold_role("telegram-updates")
        # The database drops A's role connection (a restart, a network cut, a DBA).
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(
                """SELECT pg_terminate_backend(pid) FROM pg_locks
                   WHERE locktype = 'advisory' AND classid = $1 AND granted""",
                ROLE_LOCKS,
            )
        finally:
            await admin.close()
        assert await b.hold_role("telegram-updates")  # free now: B takes it
        assert not await a.hold_role("telegram-updates")  # A learns it is not its own
    finally:
        await a.close()
        await b.close()


async def test_a_turn_taken_while_another_asked_is_not_taken_twice(postgres_url: str) -> None:
    """Two processes ask for a turn at once: the second's statement read the clock, then
    waited for the first's to commit, and finds the turn taken a moment "after" its own
    clock reading. That is the first process's turn, not a clock jump: it must wait."""
    store = PostgresStore(postgres_url)
    await store.open()
    first = await asyncpg.connect(postgres_url)
    try:
        assert await store.take_turn("discord-identify-0", 5.0) == 0
        async with first.transaction():
            # The first process's turn, its clock read a little later than the second's
            # (a second later here, where the race gives milliseconds).
            await first.execute(
                """UPDATE turns SET at = extract(epoch FROM clock_timestamp()) + 1
                   WHERE name = 'discord-identify-0'"""
            )
            asking = asyncio.ensure_future(store.take_turn("discord-identify-0", 5.0))
            await asyncio.sleep(0.3)  # its statement is waiting for the row now
        assert 4 < await asking <= 5
    finally:
        await first.close()
        await store.close()


async def test_a_turn_taken_in_the_servers_future_does_not_count(postgres_url: str) -> None:
    """Its clock was set back an hour after the last turn: the next is taken at once,
    not an hour later (as every process asking would otherwise wait)."""
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        assert await store.take_turn("discord-identify-0", 5.0) == 0
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute("UPDATE turns SET at = at + 3600")
        finally:
            await conn.close()
        assert await store.take_turn("discord-identify-0", 5.0) == 0
        assert 4 < await store.take_turn("discord-identify-0", 5.0) <= 5
    finally:
        await store.close()
