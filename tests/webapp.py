"""The web app with the pipeline behind it, as the running bot has it: ingest answers the
webhook, a dispatch stage (running while the app runs) applies the events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bot.config import Config
from bot.pipeline.dispatch import Dispatcher, DispatchStage
from bot.pipeline.ingest import Intake
from bot.store import Store
from bot.web import create_app

STAGE_KEY = web.AppKey("test-dispatch-stage", DispatchStage)


def pipeline_app(store: Store, config: Config, **options: Any) -> web.Application:
    """`create_app` over an Intake into `store`, with a console-only dispatch stage."""
    stage = DispatchStage(Dispatcher(store=store, routes=config.routes, sinks=["console"]))
    app = create_app(intake=Intake(store, on_committed=stage.wake), **options)

    async def run_stage(_app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(stage.run(stop))
        yield
        stop.set()
        try:
            await task
        except RuntimeError as exc:
            # pytest closes the `store` fixture before the aiohttp fixtures shut the app
            # down; a stage that looked at the store in between found it closed.
            if "store is not open" not in str(exc):
                raise

    app.cleanup_ctx.append(run_stage)
    app[STAGE_KEY] = stage
    return app


async def dispatched(app: web.Application) -> None:
    """Wait until every event the app accepted so far has been dispatched."""
    async with asyncio.timeout(10):
        await app[STAGE_KEY].idle()
