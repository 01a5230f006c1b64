"""The API's answer to a request that no HTTP function's route takes.

The Functions host answers such a request itself, with an empty ``404``. The app registers one
more HTTP function, a catch-all (``{*path}``) that the host tries after every other route
(:mod:`agentstream.functions`), and it answers here in the API's JSON: ``405
method_not_allowed`` (with ``Allow``) when a route has the path but not the method, else ``404
not_found``. Which routes have the path is decided on the app's own route templates, matched as
the host's router matches them: literal segments without regard to case, ``{name}`` (with or
without a constraint) one segment, ``{*name}`` the rest of the path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Response

from .errors import error_response

_PARAMETER = re.compile(r"^\{(\*?)(\w+)(?::[^}]*)?\??\}$")
# A path is echoed in the message, shortened: the message must stay readable.
_SHOWN_PATH_CHARS = 200


@dataclass(frozen=True)
class RouteTemplate:
    """A route template (``agents/{agent}/conversations``), without the host's route prefix."""

    template: str
    # Per segment: the literal text (lower case), or the parameter's name.
    segments: tuple[tuple[str, bool], ...]
    rest: str | None  # the catch-all parameter's name, when the template ends with one

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        parts = template.strip("/").split("/") if template.strip("/") else []
        segments: list[tuple[str, bool]] = []
        rest = None
        for index, part in enumerate(parts):
            parameter = _PARAMETER.match(part)
            if parameter is None:
                segments.append((part.lower(), False))
            elif parameter.group(1):
                if index != len(parts) - 1:
                    raise ValueError(f"a catch-all parameter must be last: {template}")
                rest = parameter.group(2)
            else:
                segments.append((parameter.group(2), True))
        return cls(template, tuple(segments), rest)

    def match(self, path: str) -> dict[str, str] | None:
        """The route parameters when ``path`` (relative to the route prefix) matches, else None."""
        parts = path.split("/") if path else []
        if len(parts) < len(self.segments) or (
            self.rest is None and len(parts) > len(self.segments)
        ):
            return None
        values: dict[str, str] = {}
        for (text, is_parameter), part in zip(self.segments, parts, strict=False):
            if is_parameter:
                if not part:
                    return None
                values[text] = part
            elif part.lower() != text:
                return None
        if self.rest is not None:
            values[self.rest] = "/".join(parts[len(self.segments) :])
        return values


@dataclass(frozen=True)
class Route:
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method


class RouteTable:
    """The app's HTTP routes, to tell a wrong method from a path that is no route."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)

    def methods_at(self, path: str) -> set[str]:
        """Every method some route takes at ``path`` (relative to the route prefix)."""
        methods: set[str] = set()
        for route in self.routes:
            if route.template.match(path) is not None:
                methods |= route.methods if route.methods is not None else {"*"}
        return methods


def not_found(method: str, shown_path: str) -> Response:
    return error_response(
        404,
        "not_found",
        f"There is no {method} {shown_path[:_SHOWN_PATH_CHARS]}. "
        "The API's routes are listed in /api/openapi.json.",
    )


def method_not_allowed(method: str, shown_path: str, allowed: Iterable[str]) -> Response:
    allow = ", ".join(sorted(set(allowed) - {"HEAD"}))
    response = error_response(
        405,
        "method_not_allowed",
        f"{method} is not allowed on {shown_path[:_SHOWN_PATH_CHARS]}; use {allow}.",
    )
    response.headers["Allow"] = allow
    return response


def unrouted(table: RouteTable, method: str, path: str, shown_path: str) -> Response:
    """The answer to ``method`` on ``path`` (relative to the route prefix), which no route took;
    ``shown_path`` is the path as the client sent it."""
    allowed = table.methods_at(path)
    if allowed and "*" not in allowed and method.upper() not in allowed:
        return method_not_allowed(method, shown_path, allowed)
    return not_found(method, shown_path)
