"""The caller of a request, per ``AUTH_MODE``."""

from __future__ import annotations

from fastapi import Request

from ..config import AuthSettings
from .caller import Caller, client_address
from .easyauth import easyauth_caller
from .entra import entra_caller


async def identify(request: Request, settings: AuthSettings) -> Caller:
    if settings.mode == "entra":
        return await entra_caller(request, settings)
    if settings.mode == "easyauth":
        return easyauth_caller(request)
    return Caller(owner="", limit_key="addr:" + client_address(request))
