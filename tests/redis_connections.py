"""How many connections a worker holds on each Redis node, watched while a test or bench runs."""

from __future__ import annotations

import threading

import redis


class ConnectionPeaks:
    """The most connections by client name each Redis node held while this was running
    (``CLIENT LIST`` on every node, sampled on a thread of its own)."""

    def __init__(self, ports: list[int], names: dict[str, tuple[str, ...]]) -> None:
        nodes = {port: redis.Redis(port=port, decode_responses=True) for port in ports}
        self._nodes = nodes
        self._names = names
        self.peaks = {kind: dict.fromkeys(nodes, 0) for kind in names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for port, client in self._nodes.items():
                names = [c["name"] for c in client.client_list()]
                for kind, wanted in self._names.items():
                    count = sum(1 for name in names if name in wanted)
                    self.peaks[kind][port] = max(self.peaks[kind][port], count)
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> ConnectionPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for client in self._nodes.values():
            client.close()
