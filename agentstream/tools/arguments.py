"""Validation of tool-call arguments, with errors the model can act on."""

from __future__ import annotations

from datetime import date
from typing import Any

from .base import ToolError


def text_argument(arguments: dict[str, Any], name: str, max_length: int = 200) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"'{name}' must be a non-empty string")
    return value.strip()[:max_length]


def int_argument(arguments: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = arguments.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ToolError(f"'{name}' must be a whole number")
    try:
        number = int(value)
    except ValueError:
        raise ToolError(f"'{name}' must be a whole number") from None
    return max(low, min(high, number))


def date_argument(arguments: dict[str, Any], name: str) -> date:
    value = arguments.get(name)
    if not isinstance(value, str):
        raise ToolError(f"'{name}' must be a date like 2025-06-01")
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ToolError(f"'{name}' must be a date like 2025-06-01") from None
