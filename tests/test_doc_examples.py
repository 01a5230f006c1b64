"""The curl examples of README.md and docs/api.md, run with bash as a user would copy them.

Each document's fenced ``sh``/``bash``/``console`` blocks that call curl run in order in one bash
process against a development host with the scripted model; the only change is the address
(``make run``'s default, http://localhost:7071, becomes the test host's). A wrapper around curl
records each call's HTTP status and exit code.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .devhost_process import REPO, running_devhost
from .standins import scripted_services

DEFAULT_ADDRESS = "http://localhost:7071"
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_RUNNABLE = {"sh", "bash", "console", "shell"}

_PRELUDE = """set -euo pipefail
curl() {
  local rc=0
  command curl --write-out '%{stderr}@@status %{http_code}\\n' "$@" || rc=$?
  echo "@@exit $rc" >&2
  return "$rc"
}
"""

# The HTTP status of every curl call, in order. A cancel right after a message is 202 while the
# run is still going and 409 once it has already ended; both are what the example promises.
CANCEL = frozenset({202, 409})
EXPECTED = {
    "README.md": [202, 202, 202, 200, 200, 200, 200, 200, 202, CANCEL, 200, 200, 200],
    "docs/api.md": [
        *[202, 202, 202],  # start, the same Idempotency-Key twice
        *[200] * 5,  # the stream, five ways
        *[200, 204],  # status for the last id; nothing after it
        *[202, CANCEL, 200, 200, 200],  # next message, cancel, its stream, status, health
        204,  # delete
        200,  # the caller's conversations
        *[200, 202, 200, 200],  # the agents; a conversation, its stream, its turns
        *[400, 415, 404, 404, 406, 400],  # errors to try
    ],
}


def curl_blocks(markdown: str) -> list[str]:
    """The runnable shell blocks that use curl, and those that only define what they use."""
    blocks = []
    for language, body in _FENCE.findall(markdown):
        if language not in _RUNNABLE:
            continue
        if language == "console":  # keep the commands, drop the output
            body = "\n".join(line[2:] for line in body.splitlines() if line.startswith("$ "))
        if _AZURE_ONLY.search(body):
            continue  # needs a deployed app and the Azure CLIs
        if "curl" in body or _only_definitions(body):
            blocks.append(body)
    return blocks


def _only_definitions(body: str) -> bool:
    """A block that only sets variables or defines functions (``B=...``, ``field() {...}``)."""
    lines = [line for line in body.splitlines() if line.strip() and not line.startswith("#")]
    return bool(lines) and all(_DEFINITION.match(line) for line in lines)


_AZURE_ONLY = re.compile(r"^\s*[A-Z]*=?\$?\(?(azd|az) ", re.MULTILINE)
_DEFINITION = re.compile(r"^[A-Za-z_]\w*(=\S|\(\))")


@pytest.fixture(scope="module")
def app_url(redis_port: int) -> Iterator[str]:
    with scripted_services(create_model_app(), redis_port) as env, running_devhost(env) as url:
        yield url


def test_the_examples_use_make_runs_address_and_plain_ascii() -> None:
    for name in EXPECTED:
        for block in curl_blocks((REPO / name).read_text(encoding="utf-8")):
            assert block.isascii(), f"{name}: keep examples ASCII (no ellipsis, no dashes)"
            for url in re.findall(r"https?://[^\s'\"/]+", block):
                assert url == DEFAULT_ADDRESS, f"{name}: {url} is not make run's address"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_curl_examples_run_verbatim(name: str, app_url: str, tmp_path: Path) -> None:
    blocks = curl_blocks((REPO / name).read_text(encoding="utf-8"))
    assert blocks, f"{name} has no curl examples"
    script = _PRELUDE + "\n".join(blocks).replace(DEFAULT_ADDRESS, app_url)
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    exits = [int(code) for code in re.findall(r"@@exit (\d+)", result.stderr)]
    statuses = [int(code) for code in re.findall(r"@@status (\d{3})", result.stderr)]
    context = f"\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{name}: the examples failed{context}"
    assert exits == [0] * len(exits), context
    expected = EXPECTED[name]
    assert len(statuses) == len(expected), f"{name}: {statuses}{context}"
    for index, (status, wanted) in enumerate(zip(statuses, expected, strict=True)):
        allowed = wanted if isinstance(wanted, frozenset) else {wanted}
        assert status in allowed, f"{name}: call {index + 1} answered {status}{context}"
    assert "Here is your 3-day plan for Lisbon" in result.stdout
