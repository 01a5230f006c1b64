"""The caller of a request, and why there may be none."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request


@dataclass(frozen=True)
class Caller:
    """``owner``: who conversations belong to ("" when there is no identity: ``AUTH_MODE=key``).
    ``limit_key``: whose limits a request counts against (the owner, or the client address)."""

    owner: str
    limit_key: str


class CredentialsUnavailable(Exception):
    """The credentials cannot be checked right now (the signing keys could not be fetched)."""


class Unauthenticated(Exception):
    """No credentials, or credentials that do not hold; ``invalid`` says which."""

    def __init__(self, message: str, *, invalid: bool) -> None:
        super().__init__(message)
        self.message = message
        self.invalid = invalid


def client_address(request: Request) -> str:
    """The client's address: the last ``X-Forwarded-For`` hop (the one the platform's front end
    added; earlier hops are whatever the client sent), else the peer's address."""
    forwarded = request.headers.get("x-forwarded-for", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    if last:
        # "1.2.3.4:5678" (App Service adds the port) or "[::1]:5678" -> the address alone.
        if last.startswith("["):
            return last[1:].split("]", 1)[0]
        if last.count(":") == 1:
            return last.split(":", 1)[0]
        return last
    return request.client.host if request.client else "unknown"
