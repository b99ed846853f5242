"""A worker's start-up loads run together, so a database that never answers delays its start by one
DB_TIMEOUT rather than one per load; a failing hook is logged and the others still run."""

from __future__ import annotations

import asyncio

from proxyproject.lib.lifespan import lifespan_app


async def run_lifespan(monkeypatch, startup: list, shutdown: list) -> list[str]:
    monkeypatch.setattr("proxyproject.lib.lifespan._startup_hooks", startup)
    monkeypatch.setattr("proxyproject.lib.lifespan._shutdown_hooks", shutdown)
    monkeypatch.setattr("proxyproject.lib.lifespan.tune_garbage_collection", lambda: None)
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[str] = []

    async def send(message: dict) -> None:
        sent.append(message["type"])

    server = asyncio.create_task(lifespan_app({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(server, 10)
    return sent


async def test_start_up_hooks_wait_together_not_one_after_the_other(monkeypatch):
    """Each hook waits until every hook has begun, as three loads each waiting out DB_TIMEOUT on a
    silent database do: run in turn, the first would wait forever."""
    begun: list[str] = []
    all_begun = asyncio.Event()

    def load(name: str):
        async def hook() -> None:
            begun.append(name)
            if len(begun) == 3:
                all_begun.set()
            await all_begun.wait()

        return hook

    sent = await run_lifespan(monkeypatch, [load("key pool"), load("prices"), load("spend counters")], [])
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert begun == ["key pool", "prices", "spend counters"]


async def test_a_failing_start_up_hook_is_logged_and_the_others_still_run(monkeypatch, caplog):
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("database away")

    async def loads() -> None:
        await asyncio.sleep(0)
        ran.append("loaded")

    sent = await run_lifespan(monkeypatch, [broken, loads], [])
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert ran == ["loaded"]
    assert any(record.message == "lifespan hook failed" and record.exc_info for record in caplog.records)


async def test_shutdown_hooks_run_one_after_the_other_in_the_order_registered(monkeypatch):
    order: list[str] = []

    def step(name: str):
        async def hook() -> None:
            order.append(f"{name} begins")
            await asyncio.sleep(0.01)
            order.append(f"{name} ends")

        return hook

    await run_lifespan(monkeypatch, [], [step("upstream client"), step("usage writer")])
    assert order == ["upstream client begins", "upstream client ends", "usage writer begins", "usage writer ends"]
