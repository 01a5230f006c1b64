"""Logging rules that hold for the whole package.

HTTP client libraries log every request URL at INFO: the model endpoint, and the events tool's URL
that carries its API key; azure-identity logs each token request. None of that belongs in a log.
"""

from __future__ import annotations

import logging

CHATTY_LOGGERS = (
    "httpx",
    "httpcore",
    "httpx2",  # what the openai library uses from its version 3 on
    "httpcore2",
    "azure.identity",
    "azure.core.pipeline.policies.http_logging_policy",
)


def quiet_chatty_loggers() -> None:
    """Hold the HTTP client and credential loggers at WARNING."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
