"""Keys a test generates, a local JWKS endpoint that serves them, and tokens signed with them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .servers import serve_in_thread

AUDIENCE = "api://agentstream-tests"
KID = "test-key-1"


class LocalIssuer:
    """An identity provider in miniature: one published RSA key, and tokens signed with it."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issuer = ""  # set once the JWKS server has an address

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": KID, "use": "sig", "alg": "RS256"}]}

    def token(self, subject: str, *, key: Any = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "oid": subject,
            "sub": f"sub-{subject}",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            **overrides,
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": KID})

    def env(self) -> dict[str, str]:
        return {
            "AUTH_MODE": "entra",
            "AUTH_ENTRA_ISSUER": self.issuer,
            "AUTH_ENTRA_JWKS_URL": f"{self.issuer}/discovery/v2.0/keys",
            "AUTH_ENTRA_AUDIENCE": AUDIENCE,
        }


@contextmanager
def serving_issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()

    async def keys(request: Request) -> JSONResponse:
        return JSONResponse(issuer.jwks())

    app = Starlette(routes=[Route("/tenant/discovery/v2.0/keys", keys)])
    with serve_in_thread(app) as url:
        issuer.issuer = f"{url}/tenant"
        yield issuer


def unsigned_token(claims: dict[str, Any]) -> str:
    """``alg: none``: a token anyone can forge."""
    return jwt.encode(claims, None, algorithm="none", headers={"kid": KID})
