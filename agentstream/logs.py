"""Logging rules that hold for the whole package.

HTTP client libraries log every request URL at INFO: the model endpoint, and the events tool's URL
that carries its API key; azure-identity logs each token request. None of that belongs in a log.
An internal error is logged with its traceback, redacted first: exception texts can carry URLs,
keys and connection strings.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Mapping

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


REDACTED = "[REDACTED]"

# Settings whose values are secrets, by name: their values never appear in a log line.
_SECRET_SETTING = re.compile(
    r"KEY|SECRET|PASSWORD|TOKEN|CONNECTION_STRING|CREDENTIAL|AUTHENTICATION_STRING|SAS", re.I
)
# Things that look like secrets wherever they come from (an exception's text, a URL).
_SECRET_SHAPES = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"(?i)\b((?:api[-_]?key|apikey|key|code|token|access_token|sig|secret|password|pwd)"
            r"\s*[=:]\s*)[^&\s,;'\"]+"
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(\w+://[^:/@\s]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),  # user:password@host
    (re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*"), REDACTED),  # a JWT
    (re.compile(r"\bsk-[\w-]{16,}"), REDACTED),  # an OpenAI-style key
)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` without secret setting values and without anything shaped like a secret."""
    env = os.environ if env is None else env
    values = sorted(
        (v for k, v in env.items() if _SECRET_SETTING.search(k) and len(v.strip()) >= 6),
        key=len,
        reverse=True,
    )
    for value in values:
        text = text.replace(value, REDACTED)
    for pattern, replacement in _SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text


def log_internal_error(logger: logging.Logger, message: str, *args: object) -> None:
    """Log the exception being handled with its traceback, redacted (see :func:`redact`).

    The traceback is formatted here, not by the log handler, so the redaction holds whatever
    handler the host installed.
    """
    trace = redact(traceback.format_exc())
    logger.error(message + "\n%s", *args, trace.rstrip())
