"""The ingest baseline: a bare aiohttp app that parses the JSON body and answers 202.

Run as ``python -m bench.bare``; logs ``listening on http://HOST:PORT`` to stderr like the
bot, so the benchmark starts and finds both the same way.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    """Parse the body as JSON and answer 202, as the bot does once an event is stored."""
    await request.json()
    return web.json_response({"status": "accepted"}, status=202)


async def main() -> None:
    """Serve on 127.0.0.1 at a free port until SIGTERM or SIGINT."""
    app = web.Application()
    app.router.add_post("/webhook/{source}", accept)
    await serve(app)


async def serve(app: web.Application) -> None:
    """Serve `app` on 127.0.0.1 at a free port, access log off, until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"listening on http://{host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
