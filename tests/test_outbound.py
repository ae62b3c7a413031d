"""Outbound message references: unique, UUID-shaped, never repeated by a forked worker."""

from __future__ import annotations

import os
import re
import sys

import pytest

from botkit import OutboundMessage, SendMode
from botkit.storage import new_ref


def test_references_are_32_hex_digits_and_never_repeat() -> None:
    refs = [new_ref() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", ref) for ref in refs)
    assert len(set(refs)) == len(refs)
    assert OutboundMessage(user="79031234567", mode=SendMode.TEXT, text="a").ref not in refs


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_does_not_repeat_its_parents_references() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next references and leave at once
        os.write(write, " ".join(new_ref() for _ in range(100)).encode())
        sys.stdout.flush()
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_ref() for _ in range(100)}
    assert len(child) == 100 and not child & parent
