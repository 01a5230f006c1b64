"""One retry-delay policy, in one place, for every retry loop of the app and its client."""

from __future__ import annotations

import ast
import random

import redis.exceptions

from agentstream.backoff import REDIS_WRITE, Backoff, RedisBackoff
from agentstream.streamlog.retry import call_with_retries

from .devhost_process import REPO

PACKAGES = ("agentstream", "agentstream_client", "agentstream_dev")
POLICY_MODULE = REPO / "agentstream" / "backoff.py"


def test_waits_double_from_first_up_to_the_cap_each_jittered() -> None:
    policy = Backoff(first=0.25, cap=2.0)
    random.seed(15)
    waits = [policy.delay(failures) for failures in range(1, 7)]
    steps = [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert all(step / 2 <= wait <= step for wait, step in zip(waits, steps, strict=True))
    assert len(set(waits)) == len(waits), "jittered, not in lockstep"
    random.seed(15)
    assert [RedisBackoff(policy).compute(failures) for failures in range(1, 7)] == waits


def test_the_writer_waits_as_the_policy_says() -> None:
    blips = iter([True, True, True, False])
    waits: list[float] = []

    def operation() -> str:
        if next(blips):
            raise redis.exceptions.ConnectionError("blip")
        return "written"

    random.seed(7)
    assert call_with_retries(operation, 60, sleep=waits.append) == "written"
    random.seed(7)
    assert waits == [REDIS_WRITE.delay(n) for n in (1, 2, 3)]


def test_no_retry_loop_keeps_a_backoff_of_its_own() -> None:
    """Only agentstream/backoff.py defines a backoff or takes one from redis-py."""
    own: list[str] = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path == POLICY_MODULE:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.ClassDef | ast.FunctionDef) and "backoff" in (
                    node.name.lower()
                ):
                    own.append(f"{where} defines {node.name}")
                if isinstance(node, ast.ImportFrom) and node.module == "redis.backoff":
                    names = {alias.name for alias in node.names} - {"NoBackoff"}
                    if names:
                        own.append(f"{where} imports {sorted(names)} from redis.backoff")
    assert own == []
