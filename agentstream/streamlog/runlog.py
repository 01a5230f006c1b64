"""The Redis side of one run: ``BEGIN``, ``APPEND`` and ``HEARTBEAT``, one round trip each.

Durable entity functions run on a worker thread, so this side uses the synchronous redis-py client.
Every call is retried through Redis blips for a budget (``REDIS_RETRY_SECONDS``). That is safe
because each append carries the run's attempt and a per-attempt write number: a replay after a lost
reply returns the entry already written, and appends of an older attempt are refused once a newer
one has begun.

With replicas (``REDIS_MIN_REPLICAS``), every begin and append is pipelined with ``WAIT``
(:mod:`.replication`), and the log keeps the writes no replica has confirmed yet. When a failover
lost some of them, the next append finds out (its script reports the gap) and they are written
again with their original ids and ``seq`` (``REPAIR``) before it goes on. When the failover lost
the run itself (its ``START`` had reached no replica either), the run is first written again from
the entity's signal (``requeue``, :mod:`.requeue`), at ``begin`` or at that repair.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..events import as_text
from ..failures import RunAlreadyFinished
from . import scripts
from .keys import conversation_keys, deleted_key
from .replication import call_on_node, call_replicated, replicas_to_wait_for
from .requeue import Requeue
from .retry import call_with_retries

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Appended:
    id: str
    seq: int
    cancel_requested: bool


@dataclass(frozen=True)
class Begun:
    """What :meth:`RunLog.begin` found.

    ``outcome`` is ``begun`` (``attempt`` holds this attempt's number), ``finished`` (``status``
    is the run's final status and ``turn`` the history messages a completed run added, if still
    kept) or ``unknown`` (no such run: the conversation was deleted or its stream expired).
    """

    outcome: str
    attempt: int = 0
    status: str | None = None
    turn: list[dict[str, Any]] | None = None


class RunLog:
    """The Redis side of one run of one conversation: begin, append, heartbeat.

    Every call is one round trip, retried through Redis blips for ``retry_seconds``; it raises
    :class:`StoreUnavailable` when the budget runs out and :class:`RunAlreadyFinished` when this
    attempt may not write any more.
    """

    def __init__(
        self,
        client: redis.Redis,
        conversation_id: str,
        run_id: str,
        *,
        ttl_seconds: int,
        maxlen: int,
        lease_seconds: float = 30.0,
        retry_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
        min_replicas: int | None = 0,
        replica_wait_ms: int = 200,
        requeue: Requeue | None = None,
    ) -> None:
        self._client = client
        self._keys = conversation_keys(conversation_id)
        self.run_id = run_id
        self._ttl_ms = ttl_seconds * 1000
        self._maxlen = maxlen
        self._lease_ms = int(lease_seconds * 1000)
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._append = client.register_script(scripts.APPEND)
        self._begin = client.register_script(scripts.BEGIN)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._repair = client.register_script(scripts.REPAIR)
        self._recreate = client.register_script(scripts.RECREATE)
        self._requeue = requeue
        self._deleted_key = deleted_key(conversation_id)
        self.attempt: int | None = None
        self._writes = 0
        self._token = ""
        # None: 1 when the server reports replicas, else 0 (asked once, at begin).
        self._min_replicas = min_replicas
        self._replica_wait_ms = replica_wait_ms
        self._unconfirmed: list[list[Any]] = []  # writes no replica has confirmed yet
        self._last_id = (0, 0)  # the newest stream id this log wrote or asked for

    def _call(self, script: Any, args: list[Any]) -> Any:
        return call_with_retries(lambda: script(keys=self._keys, args=args), self._retry_seconds)

    @property
    def replicas(self) -> int:
        """Replicas each write waits for."""
        if self._min_replicas is None:
            self._min_replicas = self._call_plain(replicas_to_wait_for)
        return self._min_replicas

    def _call_plain(self, operation: Callable[[redis.Redis], Any]) -> Any:
        """``operation`` on the node that owns the conversation, retried through blips."""
        return call_with_retries(
            lambda: call_on_node(self._client, self._keys[0], operation), self._retry_seconds
        )

    def _call_replicated(
        self, script: Any, args: list[Any], keys: list[str] | None = None
    ) -> tuple[Any, int]:
        return call_with_retries(
            lambda: call_replicated(
                self._client,
                script,
                keys or self._keys,
                args,
                replicas=self.replicas,
                timeout_ms=self._replica_wait_ms,
            ),
            self._retry_seconds,
        )

    def begin(self, token: str, committed_runs: Sequence[str] = ()) -> Begun:
        """Count this delivery as the run's next attempt and take its lease.

        ``token`` identifies the delivery, so a retried call counts it once; the turns of
        ``committed_runs`` (the entity state already holds them) are no longer kept.
        """
        base = [self._ttl_ms, self._maxlen, self.run_id, token, self._lease_ms]
        reply, _ = self._call_replicated(self._begin, [*base, *committed_runs])
        outcome = as_text(reply[0])
        if outcome == "unknown" and self.recreate():
            reply, _ = self._call_replicated(self._begin, [*base, *committed_runs])
            outcome = as_text(reply[0])
        if outcome == "begun":
            self.attempt = int(reply[1])
            self._writes = 0
            self._token = token
            self._unconfirmed.clear()
            return Begun("begun", attempt=self.attempt)
        if outcome == "finished":
            turn = json.loads(reply[2]) if len(reply) > 2 and reply[2] else None
            return Begun("finished", status=as_text(reply[1]), turn=turn)
        return Begun("unknown")

    def append(
        self, event_type: str, data: dict[str, Any], turn: list[dict[str, Any]] | None = None
    ) -> Appended:
        """Append one event; raises :class:`RunAlreadyFinished` when this attempt may not write.

        ``turn`` (with a terminal event) is kept beside the run's status, so a redelivery that
        finds the run finished can restore it into the entity's history.
        """
        self._writes += 1
        keeping = self.replicas > 0 and self.attempt is not None
        now_ms = int(self._clock() * 1000)
        args = scripts.append_args(
            self.run_id,
            event_type,
            data,
            ttl_ms=self._ttl_ms,
            maxlen=self._maxlen,
            attempt=self.attempt,
            write=self._writes,
            lease_ms=self._lease_ms if self.attempt is not None else 0,
            turn=turn,
            now=now_ms / 1000,
            check_lost=keeping,
            entry_id=self._next_id(now_ms) if keeping else "*",
        )
        while True:
            reply, confirmed = self._call_replicated(self._append, args)
            refused = as_text(reply[1]) if reply and reply[0] is None else None
            if refused == "lost":
                self._restore(int(reply[2]), self._writes - 1)
                continue
            if refused == "unknown" and keeping and self._requeue is not None:
                # The run itself is gone: a failover took every write, its first included.
                self._restore(0, self._writes - 1)
                continue
            break
        if not reply or reply[0] is None:
            reason = as_text(reply[1]) if reply and len(reply) > 1 else "finished"
            raise RunAlreadyFinished(f"{self.run_id}: {reason}")
        entry_id, seq, cancel = reply
        if keeping:
            self._last_id = max(self._last_id, _parsed(as_text(entry_id)))
            self._keep(args, as_text(entry_id), int(seq), confirmed)
        return Appended(id=as_text(entry_id), seq=int(seq), cancel_requested=bool(int(cancel)))

    def _next_id(self, now_ms: int) -> str:
        """The id this append asks for: after the last one, from the writer's clock.

        Chosen before the first try and kept for the retries: if the reply is lost with a
        primary that dies, the entry is written again on its successor with the id readers may
        already hold. (When the stream is already past it, Redis picks the id instead.)
        """
        last_ms, last_seq = self._last_id
        self._last_id = (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)
        return f"{self._last_id[0]}-{self._last_id[1]}"

    def _keep(self, args: list[Any], entry_id: str, seq: int, confirmed: int) -> None:
        """Remember an append until a replica confirms it (and everything before it)."""
        if confirmed >= self.replicas:
            self._unconfirmed.clear()
            return
        # write, id, seq, type, data, ts, new status, terminal, turn (REPAIR's order)
        self._unconfirmed.append(
            [args[4], entry_id, seq, args[5], args[6], args[7], args[8], args[9], args[11]]
        )

    def _restore(self, still_there: int, written: int) -> None:
        """Write again what a failover lost: this attempt's writes after ``still_there`` up to
        ``written`` (the run itself first, from its signal, when the failover lost that too)."""
        missing = [w for w in self._unconfirmed if w[0] > still_there]
        if [w[0] for w in missing] != list(range(still_there + 1, written + 1)):
            # Lost writes that a replica had confirmed: nothing here can bring them back.
            raise RunAlreadyFinished(f"{self.run_id}: writes lost beyond repair")
        args = [self._ttl_ms, self._maxlen, self.run_id, self.attempt, self._token]
        args += [self._lease_ms, json.dumps(missing, separators=(",", ":"))]
        reply, _ = self._call_replicated(self._repair, args)
        if reply and reply[0] is None and as_text(reply[1]) == "unknown" and self.recreate():
            reply, _ = self._call_replicated(self._repair, args)
        if reply and reply[0] is None:
            raise RunAlreadyFinished(f"{self.run_id}: {as_text(reply[1])}")

    def recreate(self) -> bool:
        """Write the run again from its signal if a failover lost it (:mod:`.requeue`); whether
        the run is there now."""
        if self._requeue is None:
            return False
        args = [self._ttl_ms, self._maxlen, *self._requeue.args(self.run_id)]
        keys = [*self._keys, self._deleted_key]
        reply, _ = self._call_replicated(self._recreate, args, keys)
        answer = as_text(reply[0])
        if answer == "recreated":
            logger.warning("run %s was lost by a failover; queued again", self.run_id)
        elif answer != "present":
            logger.info("run %s is missing and not queued again (%s)", self.run_id, answer)
        return answer in ("recreated", "present")

    def heartbeat(self) -> bool:
        """Extend the run's lease; True when a cancel was requested."""
        args = [self._ttl_ms, self._maxlen, self.run_id, self.attempt or 0, self._lease_ms]
        answer = int(self._call(self._heartbeat, args))
        if answer < 0 and self.replicas > 0 and self._requeue is not None:
            # Perhaps a failover took the run itself while the model was slow: write it again
            # (this refuses, as before, when the run ended or a newer attempt took over).
            self._restore(0, self._writes)
            answer = int(self._call(self._heartbeat, args))
        if answer < 0:
            raise RunAlreadyFinished(f"{self.run_id}: no longer this attempt's to write")
        return answer == 1


def _parsed(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)
