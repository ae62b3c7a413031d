"""``botkit graph``: every state and trigger of a flow, drawn from its real definition."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from botkit import Flow
from botkit.devtools import mermaid
from bots import pizza
from tests.devtools import shop_bot

ROOT = Path(__file__).resolve().parents[2]
EDGE = re.compile(r"^\s*(\S+) --> (\S+)(?:: (.+))?$")
STATE = re.compile(r'^\s*state "([^"]+)" as (\S+)$')


def diagram_of(text: str) -> tuple[dict[str, str], set[tuple[str, str, str]], str, set[str]]:
    """Parse Mermaid text: state id -> label, (source, dest, trigger) edges, initial, finals."""
    labels: dict[str, str] = {}
    edges: set[tuple[str, str, str]] = set()
    initial, finals = "", set()
    for line in text.splitlines():
        if found := STATE.match(line):
            labels[found[2]] = found[1]
        elif found := EDGE.match(line):
            source, dest, label = found[1], found[2], found[3]
            if source == "[*]":
                initial = dest
            elif dest == "[*]":
                finals.add(source)
            else:
                for trigger in (label or "").split(" | "):
                    edges.add((source, dest, trigger))
    named = {(labels[s], labels[d], t) for s, d, t in edges}
    return labels, named, labels.get(initial, ""), {labels[f] for f in finals}


def expected_edges(flow: Flow) -> set[tuple[str, str, str]]:
    """(source, dest, trigger) for every transition the flow declares, wildcards expanded."""
    out = set()
    for t in flow.transition_defs:
        sources = flow.state_names if t["source"] == "*" else t["source"]
        sources = [sources] if isinstance(sources, str) else sources
        for source in sources:
            dest = t["dest"] if t["dest"] is not None else source
            out.add((source, dest, t["trigger"]))
    return out


def strip_labels(edges: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """Edge labels carry ``[condition]`` and ``[internal]`` notes: keep the trigger name."""
    return {(s, d, t.split(" [")[0]) for s, d, t in edges}


@pytest.mark.parametrize("flow", [pizza.order, shop_bot.order], ids=["bots.pizza", "fixture"])
def test_every_state_and_trigger_of_the_flow_is_drawn(flow: Flow) -> None:
    text = mermaid(flow)

    labels, edges, initial, finals = diagram_of(text)
    assert text.startswith(f"---\ntitle: flow {flow.name}\n---\nstateDiagram-v2\n")
    assert sorted(labels.values()) == sorted(flow.state_names)
    assert strip_labels(edges) == expected_edges(flow)
    assert {t for _, _, t in strip_labels(edges)} == set(flow.triggers)
    assert initial == flow.initial
    assert finals == set(flow.final)


def test_the_pizza_flow_reads_as_its_conversation() -> None:
    text = mermaid(pizza.order)

    for line in [
        "[*] --> menu",
        "menu --> size: pick",
        "size --> address: sized",
        "address --> confirm: addressed",
        "confirm --> placed: place",
        "confirm --> menu: restart",
        "confirm --> cancelled: cancel",
        "placed --> [*]",
        "cancelled --> [*]",
    ]:
        assert f"  {line}\n" in text


def test_conditions_are_named_on_their_edge() -> None:
    assert "  size --> address: sized | upsized [_big]\n" in mermaid(shop_bot.order)


def test_state_names_mermaid_cannot_take_become_ids_with_the_name_as_label() -> None:
    flow = Flow(
        "checkout",
        states=["cart", "wait-for pay", "default"],
        transitions=[("pay", "cart", "wait-for pay"), ("paid", "wait-for pay", "default")],
    )

    text = mermaid(flow)

    labels, edges, initial, _ = diagram_of(text)
    assert sorted(labels.values()) == ["cart", "default", "wait-for pay"]
    assert edges == {("cart", "wait-for pay", "pay"), ("wait-for pay", "default", "paid")}
    assert initial == "cart"
    for state_id in labels:
        assert re.fullmatch(r"[A-Za-z_]\w*", state_id) and state_id != "default"


def botkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "botkit", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_the_command_prints_mermaid_for_a_bots_flows() -> None:
    run = botkit("graph", "tests.devtools.shop_bot")

    assert run.returncode == 0, run.stderr
    assert run.stdout == mermaid(shop_bot.order)


def test_the_command_writes_a_file_and_says_where(tmp_path: Path) -> None:
    target = tmp_path / "order.mmd"

    run = botkit("graph", "bots.pizza:bot", "--flow", "order", "-o", str(target))

    assert run.returncode == 0, run.stderr
    assert target.read_text() == mermaid(pizza.order)
    assert str(target) in run.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tests.devtools.shop_bot", "--flow", "nope"], "has no flow 'nope' (its flows: order)"),
        (["bots.echo"], "bot 'echo' has no flows to draw"),
        (["no_such_module_here"], "cannot import 'no_such_module_here'"),
    ],
)
def test_problems_are_one_line_and_exit_2(args: list[str], says: str) -> None:
    run = botkit("graph", *args)

    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and says in run.stderr


def test_images_without_graphviz_fail_with_what_to_install(tmp_path: Path) -> None:
    # No dot on PATH (and maybe no graphviz package): either way, one line naming both.
    env = {**os.environ, "PATH": str(tmp_path)}

    run = botkit("graph", "tests.devtools.shop_bot", "--format", "svg", env=env)

    assert run.returncode == 2
    assert run.stderr.count("\n") == 1
    assert run.stderr.startswith("botkit graph: --format svg: ")
    # The tests run from a checkout: the extra comes from it, not from the index.
    assert "pip install -e '.[graph]' in your botkit checkout" in run.stderr
    assert "apt-get install graphviz" in run.stderr


def _graphviz_present() -> bool:
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


@pytest.mark.skipif(not _graphviz_present(), reason="needs pip install 'botkit[graph]' and dot")
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_images_show_every_state_and_trigger(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"flows.{fmt}"

    run = botkit("graph", "bots.pizza", "--format", fmt, "-o", str(target))

    assert run.returncode == 0, run.stderr
    data = target.read_bytes()
    if fmt == "png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        return
    svg = data.decode()
    texts = set(re.findall(r"<text[^>]*>([^<]*)</text>", svg))
    assert set(pizza.order.state_names) <= texts
    assert set(pizza.order.triggers) <= texts


def test_the_readme_shows_the_pizza_flow_as_it_is_defined() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", readme, re.S)
    [shown] = [b for b in blocks if "stateDiagram" in b and "--> menu" in b]
    # The README may write state ids bare (no "state ... as" lines): name each by itself.
    ids = {name: name for name in pizza.order.state_names}
    text = "\n".join(f'state "{n}" as {n}' for n in ids) + "\n" + shown

    _, edges, initial, finals = diagram_of(text)

    assert strip_labels(edges) == expected_edges(pizza.order)
    assert initial == pizza.order.initial
    assert finals == set(pizza.order.final)
