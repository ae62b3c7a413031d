"""What an operator reads: the real output of ``botkit dev`` and ``botkit run``.

One line per turn at INFO and no library chatter (``transitions`` logs its
state changes at INFO); a failed handler is one ERROR line saying where it
was raised (the traceback at DEBUG); values from the outside cannot write
fake lines; a Redis outage is one line when it starts and one when it ends.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.service._harness import (
    API_KEY,
    CALLBACK_SECRET,
    WEBHOOK_TOKEN,
    BotProcess,
    clean_env,
    free_port,
    incoming,
    wait_for,
)
from tests.service.conftest import Provider
from tests.storage._redis_server import RedisServer

ANNA = "79031234567"

BOT = textwrap.dedent(
    """
    from botkit import Bot, Context, Flow, Text

    order = Flow(
        "order",
        states=["menu", "size", "placed"],
        transitions=[("pick", "menu", "size"), ("sized", "size", "placed")],
        final=["placed"],
    )
    bot = Bot("logs")
    bot.include_router(order)


    @order.text(state="menu")
    async def pick(ctx: Context) -> None:
        await ctx.flow.pick()
        await ctx.reply("Which size?")


    @order.text(state="size")
    async def size(ctx: Context) -> None:
        await ctx.flow.sized()
        await ctx.reply("Ordered.")


    def parse_quantity(text: str) -> int:
        return int(text)


    @bot.text(Text("crash"), state=None)
    async def crash(ctx: Context) -> None:
        parse_quantity(ctx.text)


    @bot.text(state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(order)
        await ctx.reply("Menu: 1) Margherita")
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "logbot.py").write_text(BOT)
    return tmp_path


async def run_dev(
    processes: list[BotProcess], project: Path, **env: str
) -> tuple[BotProcess, str, str]:
    """``botkit dev logbot`` on a free port; its base URL and webhook token."""
    dev = BotProcess(
        ["dev", "logbot", "--port", "0"], clean_env(**env), project / "dev.log", cwd=project
    )
    processes.append(dev)
    dev.start()
    await dev.wait_for_log("chat page:")
    base = re.search(r" on (http://\S+)", dev.log()).group(1)  # type: ignore[union-attr]
    token = re.search(r"/whatsapp/incoming/(\S+)", dev.log()).group(1)  # type: ignore[union-attr]
    return dev, base, token


async def say(http: httpx.AsyncClient, text: str) -> None:
    injected = await http.post("/_provider/_emulator/incoming", json={"from": ANNA, "text": text})
    assert injected.json()["webhookStatus"] == 200


async def test_dev_logs_one_line_per_turn_and_a_failed_handler_in_one_line(
    processes: list[BotProcess], project: Path
) -> None:
    dev, base, token = await run_dev(processes, project)
    async with httpx.AsyncClient(base_url=base) as http:
        for text in ("hi", "1", "M", "crash"):
            await say(http, text)
        await dev.wait_for_log("botkit.turn: turn", count=4)
        # A messageId with a newline (in a callback that fails its signature check).
        fake = "12:00:00 error   botkit.turn: turn forged"
        forged = [{"messageId": f"m1\n{fake}", "status": "DELIVERED", "options": "x"}]
        answer = await http.post(f"/whatsapp/status/{token}", json=forged)
        assert answer.status_code == 200
        await dev.wait_for_log("messageId m1")
    lines = dev.log().splitlines()

    turns = [line for line in lines if line[9:].startswith("info    botkit.turn: turn ")]
    assert len(turns) == 4, "\n".join(lines)
    assert [re.search(r"handler=(\S+)", t).group(1) for t in turns] == [  # type: ignore[union-attr]
        "start",
        "pick",
        "size",
        "crash",
    ]
    assert not [line for line in lines if "transitions" in line], "library chatter at INFO"
    errors = [line for line in lines if line[9:14] == "error"]
    assert len(errors) == 1
    assert "ZeroDivisionError" not in errors[0]
    assert "ValueError: invalid literal for int() with base 10: 'crash'" in errors[0]
    assert "(raised at logbot.py:" in errors[0] and " in parse_quantity)" in errors[0]
    assert "Traceback" not in dev.log()
    assert ANNA not in dev.log()
    # The forged id is on the warning's own line, its newline written as \n.
    [warning] = [line for line in lines if "messageId m1" in line]
    assert warning.endswith(f"(messageId m1\\n{fake})")
    assert not any(line.startswith(fake) for line in lines)


async def test_dev_honours_the_log_settings(processes: list[BotProcess], project: Path) -> None:
    dev, base, _ = await run_dev(
        processes, project, BOTKIT_LOG_FORMAT="json", BOTKIT_LOG_LEVEL="DEBUG"
    )
    async with httpx.AsyncClient(base_url=base) as http:
        await say(http, "crash")
        await dev.wait_for_log('"logger": "botkit.turn"', count=2)
    records = [json.loads(line) for line in dev.log().splitlines() if line.startswith("{")]
    [failure] = [r for r in records if r["level"] == "error"]
    assert "(raised at logbot.py:" in failure["message"]
    # At DEBUG the traceback comes with it, inside the one JSON record.
    assert "Traceback (most recent call last)" in failure["exception"]
    assert "in parse_quantity\n    return int(text)" in failure["exception"]


@pytest.fixture
def private_redis(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path)
    server.start()
    yield server  # type: ignore[misc]
    server.close()


async def test_a_redis_outage_is_one_line_and_its_end_another(
    private_redis: RedisServer, provider: Provider, processes: list[BotProcess], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_DEVINO_URL=provider.url,
        BOTKIT_SENDER="EchoCo",
        BOTKIT_REDIS_URL=private_redis.url,
        BOTKIT_CALLBACK_SECRET=CALLBACK_SECRET,
    )
    service = BotProcess(
        ["run", "bots.echo:bot", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "run.log",
    )
    processes.append(service)
    service.start()
    await service.wait_healthy(url)
    webhook = f"/whatsapp/incoming/{WEBHOOK_TOKEN}"

    private_redis.kill()
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        # Requests fail while Redis is down, and the sender's rounds fail too.
        for _ in range(5):
            answer = await http.post(webhook, json=incoming(ANNA, "anyone?"))
            assert answer.status_code == 503
        await service.wait_for_log("is unavailable")
        private_redis.start()

        async def answered() -> bool:
            return (await http.post(webhook, json=incoming(ANNA, "back?"))).status_code == 200

        await wait_for(answered, within=20, what="the webhook to answer 200 again")
        await service.wait_for_log("answers again")
        # A turn still needs a moment: the unlock channel reconnects with a backoff.
        await service.wait_for_log("unlock channel back")
    # The reply to the answered message leaves: nothing is left for the service
    # to flush when the test stops it.
    await provider.emulator.wait_for_messages(1, within=30)
    lines = service.log().splitlines()
    store_lines = [line[9:] for line in lines if " botkit.store" in line]
    channel_lines = [line[9:] for line in lines if " botkit.storage.redis" in line]
    # The store: one line when the outage starts, one when it ends, whatever
    # failed in between (five webhooks, the sender's rounds).
    assert len(store_lines) == 2, "\n".join(lines)
    assert store_lines[0].startswith("warning botkit.store: the conversation store is unavailable")
    assert store_lines[1].startswith("info    botkit.store: the conversation store answers again")
    # The unlock channel's own connection: lost once, back once.
    assert len(channel_lines) == 2, "\n".join(lines)
    assert "unlock channel lost (" in channel_lines[0]
    assert "unlock channel back after " in channel_lines[1]
    assert "Traceback" not in service.log()
    assert not [line for line in lines if line[9:14] == "error"], "\n".join(lines)


async def test_run_with_workers_logs_its_address_and_supervisor_in_the_chosen_format(
    processes: list[BotProcess], tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    # With --workers N, the botkit process supervises the workers: its lines
    # (where it listens, the workers it starts) are JSON like the workers'.
    port = free_port()
    env = clean_env(
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_DEVINO_URL=f"http://127.0.0.1:{free_port()}",
        BOTKIT_SENDER="EchoCo",
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=redis_prefix,
        BOTKIT_LOG_FORMAT="json",
    )
    service = BotProcess(
        ["run", "bots.echo:bot", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env,
        tmp_path / "run.log",
    )
    processes.append(service)
    service.start()
    await service.wait_healthy(f"http://127.0.0.1:{port}", workers=2)
    await service.wait_for_log("Application startup complete", count=2)
    await service.wait_for_log("Workers ready")
    records = [json.loads(line) for line in service.log().splitlines()]
    messages = [record["message"] for record in records]
    assert f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in messages
    assert any(message.startswith("Started parent process") for message in messages)
    parent = service.process.pid if service.process else 0
    assert {r["pid"] for r in records if r["logger"] == "botkit.workers"} == {parent}
