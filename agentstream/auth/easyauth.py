"""App Service Authentication ("Easy Auth"): the platform validated the caller.

With authentication turned on, App Service strips any ``X-MS-CLIENT-PRINCIPAL*`` header a client
sends and sets them itself for an authenticated caller, so they can be trusted — which is why
``AUTH_MODE=easyauth`` refuses to start unless the platform says authentication is on
(``WEBSITE_AUTH_ENABLED``). The caller is ``X-MS-CLIENT-PRINCIPAL-ID`` (the object id), else the
principal's object-identifier claim.
"""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import Request

from .caller import Caller, Unauthenticated

OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")


def easyauth_caller(request: Request) -> Caller:
    subject = request.headers.get("x-ms-client-principal-id", "").strip()
    if not subject:
        subject = _object_id(request.headers.get("x-ms-client-principal", ""))
    if not subject:
        raise Unauthenticated("This API needs a signed-in caller.", invalid=False)
    return Caller(owner="easyauth:" + subject, limit_key="easyauth:" + subject)


def _object_id(encoded: str) -> str:
    """The object id claim of the base64 JSON principal, or "" when there is none."""
    if not encoded:
        return ""
    try:
        principal = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return ""
    claims = principal.get("claims") if isinstance(principal, dict) else None
    for claim in claims if isinstance(claims, list) else []:
        if isinstance(claim, dict) and claim.get("typ") in OBJECT_ID_CLAIMS:
            value = claim.get("val")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return ""
