"""Real Redis Clusters on free loopback ports, for tests and benchmarks.

``running_cluster(primaries=3, replicas=1)`` starts a 3-shard cluster with a replica each;
``running_cluster(primaries=1, replicas=0)`` a one-node cluster that owns every slot (what Azure
Managed Redis looks like to a client). Nodes are joined with ``CLUSTER ADDSLOTSRANGE``/``MEET``/
``REPLICATE`` directly rather than ``redis-cli --cluster create``, whose join loop waits whole
seconds; start-up is well under a second.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from agentstream_dev.local_redis import start_redis_server

from .redis_server import free_port

SLOTS = 16384
# Short, so a killed primary's replica takes over within a couple of seconds.
NODE_TIMEOUT_MS = 1000


@dataclass
class ClusterNode:
    port: int
    workdir: Path
    # Its own free port: the default (port + 10000) can fall outside the port range.
    bus_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def start(self) -> None:
        self.process = start_redis_server(
            self.port,
            self.workdir,
            [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(self.bus_port),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # The tests kill primaries on purpose: the rest of the cluster keeps serving.
                "--cluster-require-full-coverage",
                "no",
                # A replica's first sync starts at once instead of after the default 5 s.
                "--repl-diskless-sync-delay",
                "0",
            ],
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing more replicated."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: the node stops answering (and replicating) until :meth:`thaw`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class RedisClusterUnderTest:
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def port(self) -> int:
        """A node to connect to (clients discover the others)."""
        return next(node.port for node in self.nodes if node.alive)

    @property
    def connection_string(self) -> str:
        return f"127.0.0.1:{self.port}"

    def live_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive]

    def primary_of_slot(self, slot: int) -> ClusterNode:
        with self.live_nodes()[0].client() as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return self.node_on(int(primary[1]))
        raise LookupError(f"no node serves slot {slot}")

    def node_on(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach: {what}")
            time.sleep(0.02)  # cluster state changes are only observable by asking

    def healthy(self) -> bool:
        """Every live node says the cluster is ok and knows the same primaries for all slots."""
        views = set()
        for node in self.live_nodes():
            try:
                with node.client() as client:
                    if client.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                        return False
                    slots = client.execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                return False
            if sum(end - start + 1 for start, end, *_ in slots) != SLOTS:
                return False
            views.add(tuple(sorted((s, e, p[1]) for s, e, p, *_ in slots)))
        return len(views) == 1

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
            shutil.rmtree(node.workdir, ignore_errors=True)


def _node_id(client: redis.Redis) -> str:
    return client.execute_command("CLUSTER MYID")


@contextmanager
def running_cluster(primaries: int = 3, replicas: int = 1) -> Iterator[RedisClusterUnderTest]:
    """Start and join a cluster; yield it; stop every node."""
    cluster = RedisClusterUnderTest()
    try:
        for _ in range(primaries * (1 + replicas)):
            node = ClusterNode(free_port(), Path(tempfile.mkdtemp(prefix="redis-cluster-")))
            cluster.nodes.append(node)
            node.start()
        clients = [node.client() for node in cluster.nodes]
        ids = [_node_id(client) for client in clients]
        for index in range(primaries):
            first = index * SLOTS // primaries
            last = (index + 1) * SLOTS // primaries - 1
            clients[index].execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        for client in clients[1:]:
            client.execute_command(
                "CLUSTER MEET", "127.0.0.1", cluster.nodes[0].port, cluster.nodes[0].bus_port
            )

        def everyone_met() -> bool:
            return all(len(c.execute_command("CLUSTER NODES")) == len(clients) for c in clients)

        cluster.wait_until(everyone_met, "every node knows every other")
        for index in range(primaries, len(clients)):
            clients[index].execute_command("CLUSTER REPLICATE", ids[index % primaries])

        def replicas_in_sync() -> bool:
            for client in clients[primaries:]:
                info = client.info("replication")
                if info.get("master_link_status") != "up":
                    return False
            return True

        cluster.wait_until(replicas_in_sync, "every replica in sync")
        cluster.wait_until(cluster.healthy, "cluster_state:ok everywhere")
        for client in clients:
            client.close()
        yield cluster
    finally:
        cluster.close()
