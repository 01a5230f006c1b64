"""HTTP content negotiation for stream responses: which format an ``Accept`` header asks for."""

from __future__ import annotations

from ..events import NDJSON, SSE, TEXT


def negotiate(accept: str | None) -> str | None:
    """Pick the stream format for an ``Accept`` header; ``None`` means 406.

    No header, ``*/*`` or ``text/*`` get the default, SSE. Quality values are honoured.
    """
    if not accept or not accept.strip():
        return SSE
    offers: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            offers.append((-quality, index, media.lower()))
    for _, _, media in sorted(offers):
        if media in (SSE, NDJSON, TEXT):
            return media
        if media in ("*/*", "text/*"):
            return SSE
        if media == "application/*":
            return NDJSON
    return None
