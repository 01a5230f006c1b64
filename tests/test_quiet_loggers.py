"""Importing the app holds the chatty HTTP and credential loggers at WARNING.

They log request URLs at INFO (the model endpoint; the events tool's URL carries its API key) and
every token request. A fresh interpreter, with the root logger at DEBUG as a host may set it,
imports the app the way the Functions worker does.
"""

from __future__ import annotations

import json
import subprocess
import sys

from agentstream.logs import CHATTY_LOGGERS

from .devhost_process import REPO

_PROBE = """
import json, logging, sys
logging.basicConfig(level=logging.DEBUG)
import function_app  # noqa: F401
names = json.loads(sys.argv[1])
print(json.dumps({n: logging.getLogger(n).getEffectiveLevel() for n in names}))
"""


def test_the_chatty_loggers_are_at_warning_after_importing_the_app() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(CHATTY_LOGGERS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    levels = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"httpx", "httpcore", "azure.identity"} <= set(levels)
    assert levels == dict.fromkeys(CHATTY_LOGGERS, 30)  # logging.WARNING
