"""What every tool is made of: its schema, the code that runs it, and the errors it may report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


class ToolError(Exception):
    """A failure whose message is safe to hand back to the model (and to show in the stream)."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], Any]

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def get_json(http: httpx.Client, url: str, params: dict[str, Any], service: str) -> Any:
    """GET a JSON document, turning every transport or HTTP failure into a :class:`ToolError`."""
    try:
        response = http.get(url, params=params)
    except httpx.TimeoutException:
        raise ToolError(f"the {service} did not answer in time") from None
    except httpx.HTTPError:
        raise ToolError(f"the {service} could not be reached") from None
    if response.status_code >= 400:
        raise ToolError(f"the {service} answered with HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ToolError(f"the {service} sent a response that is not JSON") from None
