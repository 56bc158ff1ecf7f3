"""The ingest load: keep-alive clients POSTing distinct live_start webhooks back to back,
round-robin over one or more servers (as a load balancer spreads them), either in the
bench process or spread over several client processes, so that the generator is not
what limits several bot processes.

``python -m bench.loadgen URL... --connections N --seconds S --warmup W --prefix P
--start-at EPOCH`` is one client process: it prints its `Load` as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import aiohttp

from bench.common import REPO, START_TIMEOUT, live_start

# Hard cap on requests per run, whatever the duration: every load loop is bounded.
MAX_REQUESTS = 500_000
# How long the client processes get to start (import aiohttp, connect) before the load:
# they all begin at one wall-clock moment, so their counted windows are the same.
CLIENT_START_SECONDS = 2.0


@dataclass
class Load:
    """What one load run achieved."""

    accepted: int
    other: int
    seconds: float
    # perf_counter() of the bench process at the end of the counted window.
    ended: float
    # CPU seconds the generator itself used, its cost beside the servers'.
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        """Accepted (2xx) answers per second."""
        return self.accepted / self.seconds if self.seconds else 0.0


async def generate(
    urls: Sequence[str], *, connections: int, seconds: float, warmup: float, prefix: str
) -> Load:
    """`connections` keep-alive clients POSTing distinct live_start events back to back,
    request n to ``urls[n % len(urls)]``.

    Answers during `warmup` are not counted; the run ends after `seconds` more or
    MAX_REQUESTS, whichever comes first.
    """
    ids = itertools.count()
    counted = {"ok": 0, "other": 0}
    cpu_before = time.process_time()
    begin = time.perf_counter()
    measure_from = begin + warmup
    deadline = measure_from + seconds
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    headers = {"Content-Type": "application/json"}

    async def client() -> None:
        while (now := time.perf_counter()) < deadline:
            n = next(ids)
            if n >= MAX_REQUESTS:
                return
            # A different streamer every time: a fresh live session, the common case.
            body = live_start(f"{prefix}-{n}", f"s{n}", "ingest", platform="youtube")
            async with session.post(urls[n % len(urls)], data=body, headers=headers) as answer:
                await answer.read()
                done = time.perf_counter()
            if now >= measure_from and done <= deadline:
                counted["ok" if 200 <= answer.status < 300 else "other"] += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        async with asyncio.timeout(warmup + seconds + 30):
            await asyncio.gather(*(client() for _ in range(connections)))
    return Load(
        accepted=counted["ok"],
        other=counted["other"],
        seconds=seconds,
        ended=deadline,
        client_cpu=time.process_time() - cpu_before,
    )


@dataclass(frozen=True)
class InProcess:
    """The load from the bench process itself: one asyncio client, as the SQLite ingest
    figures have always been measured."""

    connections: int
    seconds: float
    warmup: float = 1.0

    async def run(self, urls: Sequence[str], prefix: str, started: Callable[[], None]) -> Load:
        """One load run; `started` is called as the load begins."""
        started()
        return await generate(
            urls,
            connections=self.connections,
            seconds=self.seconds,
            warmup=self.warmup,
            prefix=prefix,
        )


@dataclass(frozen=True)
class ClientProcesses:
    """The load from `clients` client processes (`python -m bench.loadgen`), the
    connections split between them, all counting over the same wall-clock window."""

    clients: int
    connections: int
    seconds: float
    warmup: float = 1.0

    async def run(self, urls: Sequence[str], prefix: str, started: Callable[[], None]) -> Load:
        """One load run; `started` is called as the load begins."""
        start_at = time.time() + CLIENT_START_SECONDS
        procs: list[asyncio.subprocess.Process] = []
        try:
            for k in range(self.clients):
                procs.append(await self._spawn(urls, f"{prefix}c{k}", start_at))
            await asyncio.sleep(max(0.0, start_at - time.time()))
            started()
            async with asyncio.timeout(self.warmup + self.seconds + START_TIMEOUT + 30):
                outputs = await asyncio.gather(*(proc.communicate() for proc in procs))
        finally:
            for proc in procs:
                if proc.returncode is None:  # a timeout, or the bench stopped
                    proc.kill()
                    await proc.wait()
        for proc, (_, err) in zip(procs, outputs, strict=True):
            if proc.returncode != 0:
                raise RuntimeError(f"load client failed:\n{err.decode(errors='replace')}")
        loads = [Load(**json.loads(out)) for out, _ in outputs]
        # The window ended at one wall-clock moment; in this process's perf_counter:
        ended = time.perf_counter() - (time.time() - (start_at + self.warmup + self.seconds))
        return Load(
            accepted=sum(load.accepted for load in loads),
            other=sum(load.other for load in loads),
            seconds=self.seconds,
            ended=ended,
            client_cpu=sum(load.client_cpu for load in loads),
        )

    async def _spawn(
        self, urls: Sequence[str], prefix: str, start_at: float
    ) -> asyncio.subprocess.Process:
        argv = [
            *("-m", "bench.loadgen", *urls),
            *("--connections", str(max(1, self.connections // self.clients))),
            *("--seconds", repr(self.seconds), "--warmup", repr(self.warmup)),
            *("--prefix", prefix, "--start-at", repr(start_at)),
        ]
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )


async def _client_process(args: argparse.Namespace) -> Load:
    late = time.time() - args.start_at
    if late > args.warmup:
        # Its counted window would be shorter than the others': the sum would be wrong.
        raise SystemExit(f"load client started {late:.2f}s late, after its warm-up")
    await asyncio.sleep(max(0.0, -late))
    return await generate(
        args.urls,
        connections=args.connections,
        seconds=args.seconds,
        warmup=args.warmup,
        prefix=args.prefix,
    )


def main() -> None:
    """One client process of `ClientProcesses`."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--start-at", type=float, required=True)
    print(json.dumps(asdict(asyncio.run(_client_process(parser.parse_args())))))


if __name__ == "__main__":
    main()
