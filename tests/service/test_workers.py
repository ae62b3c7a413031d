"""``botkit run --workers N``: botkit's own supervisor of the worker processes.

The real command in a subprocess, with Redis and the emulator: SIGHUP is
passed on to the workers (which keep running), a worker that dies is
replaced, SIGTERM stops them all, workers that cannot start stop the
command with exit code 3, and workers left without their supervisor stop.
(SIGHUP reloading the auto-reply rules in every worker, in place:
tests/service/test_autoreply_service.py.)
"""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest

from tests.service._harness import (
    LOADED,
    WEBHOOK_TOKEN,
    BotProcess,
    free_port,
    port_refuses,
    run_env,
    wait_for,
    workers_of,
)
from tests.service.conftest import Provider


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not serving either.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def env(provider: Provider, redis_url: str, redis_prefix: str) -> dict[str, str]:
    """What botkit run --workers 2 needs: the emulator and a Redis of the test's own."""
    return run_env(provider.url, BOTKIT_REDIS_URL=redis_url, BOTKIT_KEY_PREFIX=redis_prefix)


async def start(
    processes: list[BotProcess],
    provider: Provider,
    env: dict[str, str],
    tmp_path: Path,
    target: str = "bots.echo:bot",
    cwd: Path | None = None,
) -> tuple[BotProcess, int]:
    port = free_port()
    args = ["run", target, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    service = BotProcess(args, env, tmp_path / "run.log", **({"cwd": cwd} if cwd else {}))
    processes.append(service)
    service.start()
    provider.emulator.webhook_url = f"http://127.0.0.1:{port}/whatsapp/incoming/{WEBHOOK_TOKEN}"
    return service, port


async def answered(provider: Provider, user: str) -> None:
    before = len(provider.emulator.messages)
    assert (await provider.emulator.inject(user, "hi")).status_code == 200
    # A generous bound: the reply goes webhook, store, outbox, sender on a loaded machine.
    await provider.emulator.wait_for_messages(before + 1, within=60)


async def test_sighup_keeps_the_workers_a_dead_one_is_replaced_sigterm_stops_all(
    provider: Provider, env: dict[str, str], tmp_path: Path, processes: list[BotProcess]
) -> None:
    service, port = await start(processes, provider, env, tmp_path)
    await service.wait_for_log("Workers ready")
    first = workers_of(service)
    assert len(first) == 2

    # The echo bot takes no SIGHUP: its workers ignore it and keep serving.
    service.signal(signal.SIGHUP)
    await service.wait_for_log(f"Received SIGHUP: passed on to workers {first}")
    await answered(provider, "79030000001")
    assert workers_of(service) == first
    assert all(alive(pid) for pid in first)

    victim, survivor = first
    os.kill(victim, signal.SIGKILL)
    await service.wait_for_log(f"Worker [{victim}] ended (killed by SIGKILL): starting another")
    await service.wait_for_log("Workers ready", count=2)
    now = workers_of(service)
    assert survivor in now and victim not in now and len(now) == 2
    await answered(provider, "79030000002")

    service.signal(signal.SIGTERM)
    assert await service.wait_exit() == 0
    assert not any(alive(pid) for pid in now)
    assert port_refuses(port)
    log = service.log()
    assert log.count("Finished server process") == 2  # both stopped gracefully
    assert "Traceback" not in log


async def test_workers_that_cannot_start_stop_botkit_run_with_exit_code_3(
    provider: Provider, env: dict[str, str], tmp_path: Path, processes: list[BotProcess]
) -> None:
    # It imports (botkit run checks that first), but its start-up fails in each worker.
    (tmp_path / "failbot.py").write_text(
        textwrap.dedent(
            """
            from botkit import Bot

            bot = Bot("fails")


            @bot.on_startup
            async def cannot_start() -> None:
                raise RuntimeError("the bot cannot start here")
            """
        )
    )
    service, port = await start(processes, provider, env, tmp_path, "failbot", cwd=tmp_path)
    assert await service.wait_exit(within=60) == 3
    log = service.log()
    assert "could not start (exit code 3): stopping; its log above says why" in log
    assert "the bot cannot start here" in log
    assert port_refuses(port)


@pytest.mark.parametrize("when", ["serving", "starting"])
async def test_workers_stop_on_their_own_when_botkit_run_is_killed(
    provider: Provider,
    env: dict[str, str],
    tmp_path: Path,
    processes: list[BotProcess],
    when: str,
) -> None:
    service, port = await start(processes, provider, env, tmp_path)
    if when == "serving":
        await service.wait_for_log("Workers ready")
    await wait_for(lambda: len(workers_of(service)) == 2, within=LOADED, what="two workers")
    workers = workers_of(service)
    service.signal(signal.SIGKILL)
    await wait_for(
        lambda: not any(alive(pid) for pid in workers), within=LOADED, what="the workers to stop"
    )
    assert port_refuses(port)
    if when == "serving":  # those that served stopped gracefully, not killed
        assert service.log().count("Finished server process") == 2


async def test_sighup_does_not_end_a_single_worker_of_a_bot_that_takes_none(
    provider: Provider, processes: list[BotProcess], tmp_path: Path
) -> None:
    port = free_port()
    args = ["run", "bots.echo:bot", "--host", "127.0.0.1", "--port", str(port)]
    service = BotProcess(args, run_env(provider.url), tmp_path / "run.log")
    processes.append(service)
    service.start()
    await service.wait_healthy(f"http://127.0.0.1:{port}")
    provider.emulator.webhook_url = f"http://127.0.0.1:{port}/whatsapp/incoming/{WEBHOOK_TOKEN}"
    service.signal(signal.SIGHUP)
    await answered(provider, "79030000003")
    assert service.running
