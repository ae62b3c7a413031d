"""A bot whose handler waits at a gate the test holds, for the shutdown tests.

The handler calls ``GET $GATE_URL`` and answers only once the test lets the
request through, so a turn is in flight for exactly as long as the test wants.
"""

from __future__ import annotations

import os

import httpx

from botkit import Bot, Context

bot = Bot("gate")


@bot.text()
async def wait_at_the_gate(ctx: Context) -> None:
    """Reply ``done: <text>`` once the gate opens."""
    async with httpx.AsyncClient(timeout=60) as http:
        await http.get(os.environ["GATE_URL"])
    await ctx.reply(f"done: {ctx.text}")
