"""The listener under hostile connections: malformed HTTP, huge values, slow request heads.

Malformed requests and huge values go through the real `python -m bot run` process and
its stderr; the header deadline is tested through `run()` in this process, with a short
deadline, on raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import Running, run
from bot.logs import MAX_MESSAGE_CHARS, THROTTLE_BURST
from tests.conftest import SECRET, make_config
from tests.test_cli import CONFIG, KEY, live_event, post, running_bot

# The deadline run() gets here: short, so a test waits little for the server to cut.
HEADER_TIMEOUT = 0.5


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def exchange(port: int, data: bytes, timeout: float = 15) -> bytes:
    """Send `data` on a new connection; all the server sends back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response off a keep-alive connection: status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length is not None, head
    return int(head.split(b" ", 2)[1]), await reader.readexactly(int(length.group(1)))


# -- malformed HTTP: one throttled line each, no secret, no traceback ----------------------

_KEY = KEY.encode()
MALFORMED = [
    b"GET /webhook/onliverec?key=" + _KEY + b" HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /webhook/onliverec?key=" + _KEY + b" HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /webhook/onliverec?key="
    + _KEY
    + b" HTTP/1.1\r\nHost: x\r\nX-Pad: "
    + b"b" * 9000
    + b"\r\n\r\n",
    b"GET http://?key=" + _KEY + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /webhook/onliverec?key=" + _KEY + b"\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /webhook/onliverec?key=" + _KEY + b" HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /webhook/onliverec?key="
    + _KEY
    + b" HTTP/1.1\r\nHost: x\r\nX-A: \x01"
    + _KEY
    + b"\r\n\r\n",
]


async def test_malformed_requests_log_one_throttled_line_each_without_secret_or_traceback(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG)
    async with running_bot(config) as bot:
        port = port_of(bot.url)
        # aiohttp's error for this quotes the request line, ?key= and all.
        long_line = (
            b"GET /webhook/onliverec?key="
            + _KEY
            + b"&pad="
            + b"a" * 9000
            + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        status, body = status_and_body(await exchange(port, long_line))
        assert status == 400
        assert json.loads(body) == {
            "error": "malformed HTTP request: a line longer than 8190 bytes"
        }
        for request in MALFORMED:
            status, body = status_and_body(await exchange(port, request))
            assert status == 400, request
            assert KEY not in body.decode("latin-1")
        # The bot serves on, and logs this after the lines for the requests before it.
        event = live_event(
            "m-1", "live_start", "2026-03-11T05:00:00Z", uname="Quinn", title="Still here"
        )
        assert (await post(bot.url, event))[0] == 202
        await bot.wait_for("stderr", r"accepted live_start m-1")
        assert await bot.stop() == 0
    err = bot.stderr
    assert KEY not in err
    assert "Traceback" not in err
    malformed = [line for line in err.splitlines() if "malformed HTTP request from" in line]
    assert 1 + len(MALFORMED) > THROTTLE_BURST
    assert len(malformed) == THROTTLE_BURST
    assert malformed[0].endswith(
        "malformed HTTP request from 127.0.0.1: a line longer than 8190 bytes; answered 400"
    )
    assert err.count("further malformed HTTP requests are summarised for the next 60s") == 1
    # Their one line is all they get: no access log line besides.
    assert "UNKNOWN" not in err
    assert err.count("aiohttp.access") == 0


# -- huge values: every log line stays bounded ---------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_a_huge_channel_name_and_title_leave_no_log_line_over_the_bound(
    tmp_path: Path, fmt: str
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(
        CONFIG.replace("port = 0", "port = 0\nmax_body_bytes = 4_000_000")
        + f'\n[logging]\nformat = "{fmt}"\n'
    )
    event = live_event(
        "big-1",
        "live_start",
        "2026-03-11T05:00:00Z",
        uname="Quinn",
        title="T" * 2_000_000,
        categories=["Games"],
    )
    event["data"] = {**event["data"], "channel": "c" * 300_000}  # type: ignore[dict-item]
    # Only stderr is the log.
    async with running_bot(config, line_limit=8 * 2**20) as bot:
        # A stream, not bytes: aiohttp warns about a large body in one piece.
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{bot.url}/webhook/onliverec?key={KEY}",
                data=io.BytesIO(json.dumps(event).encode()),
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            assert response.status == 202, await response.text()
        # The console prints the card cut to its bound (CONSOLE_TEXT_MAX).
        await bot.wait_for("stdout", r"TTTTTTTTTT…", timeout=30)
        await bot.wait_for("stderr", r"accepted live_start big-1")
        assert await bot.stop() == 0
    lines = bot.stderr.splitlines()
    assert max(len(line) for line in lines) < MAX_MESSAGE_CHARS + 200
    (accepted,) = [line for line in lines if "accepted live_start big-1" in line]
    assert "more characters] from onliverec" in accepted
    if fmt == "json":
        assert all(json.loads(line) for line in lines)


# -- the header deadline ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def listening(tmp_path: Path, **sections: Any) -> AsyncIterator[Running]:
    """The bot in this process, with a header deadline of HEADER_TIMEOUT seconds."""
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            make_config(tmp_path, **sections),
            stop,
            on_ready=ready.set_result,
            console_stream=io.StringIO(),
            header_timeout=HEADER_TIMEOUT,
        )
    )
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def healthz_ok(running: Running) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{running.base_url}/healthz") as response,
    ):
        return response.status == 200


PARTIAL_HEAD = (
    f"POST /webhook/rec?key={SECRET} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"
).encode()


async def trickle(port: int, data: bytes, interval: float) -> tuple[bytes, int]:
    """Send `data` a byte every `interval` seconds until the server closes the connection.

    What the server sent, and how many bytes went out before it closed.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.read())
    sent = 0
    try:
        async with asyncio.timeout(15):
            for byte in data:
                if answer.done():
                    break
                writer.write(bytes([byte]))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                sent += 1
                await asyncio.sleep(interval)
            return await answer, sent
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_connections_that_never_finish_their_request_head_are_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bot.listener")
    async with listening(tmp_path) as running:
        # Silent after connecting, silent halfway through a header line (many at once),
        # and a byte every 0.1s: each busy far past the deadline, so none may finish.
        slow_head = PARTIAL_HEAD + b"X" * 10_000
        silent, *partial, (trickled, sent) = await asyncio.gather(
            exchange(running.port, b""),
            *(exchange(running.port, PARTIAL_HEAD) for _ in range(50)),
            trickle(running.port, slow_head, interval=0.1),
        )
        assert silent == b""
        assert partial == [b""] * 50
        assert trickled == b""
        assert sent < len(slow_head)  # cut while still sending
        assert await healthz_ok(running)
    closed = [r.getMessage() for r in caplog.records if r.name == "bot.listener"]
    # The partial heads and the trickle: the first few, then a summary; the silent
    # connection is closed without a line.
    assert (
        closed[:THROTTLE_BURST]
        == [
            f"closed the connection from 127.0.0.1: request headers not complete within "
            f"{HEADER_TIMEOUT:g}s"
        ]
        * THROTTLE_BURST
    )
    assert closed[THROTTLE_BURST] == (
        "further connections with slow request headers are summarised for the next 60s"
    )


async def test_a_keep_alive_connection_is_not_cut_between_requests_only_in_a_slow_head(
    tmp_path: Path,
) -> None:
    async with listening(tmp_path) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            # Idle between requests for longer than the deadline: that is keep-alive.
            await asyncio.sleep(3 * HEADER_TIMEOUT)
            body = json.dumps(
                {
                    "id": "k-1",
                    "ts": "2026-03-11T05:00:00Z",
                    "type": "live_start",
                    "data": {
                        "platform": "twitch",
                        "channel": "quinn",
                        "url": "https://twitch.tv/quinn",
                        "live_info": {"title": "Kept"},
                    },
                }
            ).encode()
            # A head in two writes, then a body that takes longer than the header
            # deadline (the body has its own, longer limit).
            writer.write(f"POST /webhook/rec?key={SECRET} HTTP/1.1\r\n".encode())
            await writer.drain()
            writer.write(
                b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            await writer.drain()
            await asyncio.sleep(2 * HEADER_TIMEOUT)
            writer.write(body)
            status, answer = await read_response(reader)
            assert status == 202, answer
            assert json.loads(answer)["status"] == "accepted"
            await asyncio.sleep(3 * HEADER_TIMEOUT)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            # The next request's head starts, and stops: that connection is cut.
            writer.write(b"GET /healthz HTTP/1.1\r\nHo")
            async with asyncio.timeout(15):
                assert await reader.read() == b""
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert await running.store.count_events() == 1


async def test_the_rest_of_a_refused_body_is_not_taken_for_a_slow_request_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bot.listener")
    async with listening(tmp_path, server={"port": 0, "max_body_bytes": 1024}) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            writer.write(
                f"POST /webhook/rec?key={SECRET} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{".encode()
            )
            assert (await read_response(reader))[0] == 413  # refused on its declared size
            # aiohttp reads on what the sender still sends (lingering); far past the
            # header deadline, that is still the refused body.
            for _ in range(int(4 * HEADER_TIMEOUT / 0.1)):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)
            assert not reader.at_eof()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    assert [r for r in caplog.records if r.name == "bot.listener"] == []
