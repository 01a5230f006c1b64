"""Microsoft Entra ID bearer tokens, validated with PyJWT and its JWKS client.

The signing keys come from the tenant's JWKS document, cached by :class:`jwt.PyJWKClient` (the
set for five minutes; an unknown ``kid`` refetches it at most once per cooldown). The token's
signature (RS256 only: ``alg: none`` and HMAC tricks are refused), issuer, audience and expiry
(with ``AUTH_LEEWAY_SECONDS`` of leeway) must all hold. The caller is the token's ``oid`` (the
user or application's object id), else its ``sub``.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import jwt
from fastapi import Request

from ..config import AuthSettings
from .caller import Caller, CredentialsUnavailable, Unauthenticated

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]


@functools.cache
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)


def bearer_token(request: Request) -> str:
    """The ``Authorization: Bearer`` token; on a ``GET``, also the ``access_token`` query
    parameter (RFC 6750 2.3), for browsers' ``EventSource``, which cannot send headers."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" and request.method == "GET":
        scheme, token = "bearer", request.query_params.get("access_token", "")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("A bearer token is required.", invalid=False)
    return token.strip()


async def entra_caller(request: Request, settings: AuthSettings) -> Caller:
    token = bearer_token(request)
    try:
        # The JWKS fetch (when the cache is cold or stale) is blocking I/O: off the event loop.
        jwks = _jwks_client(settings.jwks_url)
        key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=ALGORITHMS,
            audience=list(settings.audiences),
            issuer=settings.issuer,
            leeway=settings.leeway_seconds,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWKClientConnectionError:
        logger.error("the signing keys could not be fetched from AUTH_ENTRA_JWKS_URL")
        raise CredentialsUnavailable from None
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("The bearer token has expired.", invalid=True) from None
    except (jwt.PyJWTError, ValueError):
        # Which check failed is for the log, not for the caller.
        raise Unauthenticated("The bearer token is not valid for this API.", invalid=True) from None
    subject = claims.get("oid") or claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("The bearer token names no caller (oid or sub).", invalid=True)
    return Caller(owner="entra:" + subject, limit_key="entra:" + subject)
