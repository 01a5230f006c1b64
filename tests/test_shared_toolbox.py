"""The travel planner's tools share one HTTP client, however many entity threads race for it."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from agentstream_examples.travel_planner import services


def test_racing_entity_threads_build_one_http_client(
    monkeypatch: pytest.MonkeyPatch, use_settings: Any
) -> None:
    use_settings({})
    monkeypatch.setattr(services, "_http", None)
    built: list[httpx.Client] = []
    both_building = threading.Event()
    real_client = httpx.Client

    def build(**kwargs: Any) -> httpx.Client:
        http = real_client(**kwargs)
        built.append(http)
        if len(built) == 2:
            both_building.set()
        else:
            # Without the lock, the other thread gets here while this one builds.
            both_building.wait(timeout=1)
        return http

    monkeypatch.setattr(services.httpx, "Client", build)
    got: list[httpx.Client] = []
    threads = [
        threading.Thread(target=lambda: got.append(services.http_client())) for _ in range(2)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(built) == 1, "each thread built an HTTP client"
        assert got[0] is got[1]
    finally:
        for http in built:
            http.close()
