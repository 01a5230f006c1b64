"""``GET /api/openapi.json``: the API's OpenAPI 3.1 description, kept in the repo beside this file.

The document is written by hand and held against the app by tests (routes, error codes, event
schemas), so it is served as the file is, byte for byte.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import Request, Response

DOCUMENT = "openapi.json"


@functools.cache
def document_bytes() -> bytes:
    return resources.files(__package__).joinpath(DOCUMENT).read_bytes()


async def document(req: Request) -> Response:
    return Response(
        document_bytes(),
        media_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )
