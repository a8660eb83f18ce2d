"""The chaos workload: client threads doing put / get / rm on a bounded key set.

Each worker has its own seeded `random.Random`, its own `Client` per peer, and sends each
operation through a peer it picks at random. Every value is unique: ``key|worker|seq|`` and
random padding (a few bytes to a few MiB, so some files are inline and some have blocks).
Every operation goes into the shared `History`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from peer.client.api_client import Client, Conflict, QfsError
from tests.chaos.history import (
    ABSENT,
    NOT_SENT,
    OK,
    READ,
    History,
    Op,
    classify_failure,
    digest,
    expected_failure,
)

MiB = 1024 * 1024
OP_TIMEOUT = 15.0
BIG_OP_TIMEOUT = 40.0


def value_size(rng: random.Random, big: bool) -> int:
    """A padding size: mostly small (inline), some of a few blocks; `big` for the uploader."""
    if big:
        return rng.randrange(4 * MiB, 8 * MiB)
    roll = rng.random()
    if roll < 0.6:
        return rng.randrange(0, 3000)
    if roll < 0.9:
        return rng.randrange(5000, 300_000)
    return rng.randrange(MiB + 1, 2 * MiB + MiB // 2)


class Worker(threading.Thread):
    """One client thread; runs until `stop` is set. `big` makes it upload only large files;
    `mix` is the share of puts, then of puts and gets together (the rest are deletes)."""

    def __init__(
        self,
        name: str,
        urls: dict[str, str],
        keys: list[str],
        history: History,
        stop: threading.Event,
        seed: str,
        big: bool = False,
        mix: tuple[float, float] = (0.5, 0.85),
    ) -> None:
        super().__init__(name=f"chaos-{name}", daemon=True)
        self.client_name = name
        self.keys = keys
        self.history = history
        self.stop_event = stop
        self.rng = random.Random(seed)
        self.big = big
        self.mix = mix
        timeout = BIG_OP_TIMEOUT if big else OP_TIMEOUT
        self.clients = {peer: Client(url, timeout=timeout) for peer, url in urls.items()}
        self.seq = 0
        self.uploading: str | None = None  # the peer a big upload is going through right now
        self.crash: BaseException | None = None
        self.last_op: Op | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.step()
        except BaseException as e:  # reported by the runner: the workload itself broke
            self.crash = e
        finally:
            for client in self.clients.values():
                client.close()

    def step(self) -> None:
        """One operation, chosen by this worker's random generator."""
        peer = self.rng.choice(sorted(self.clients))
        key = self.rng.choice(self.keys)
        roll = self.rng.random()
        if self.big or roll < self.mix[0]:
            self.put(peer, key)
        elif roll < self.mix[1]:
            self.get(peer, key)
        else:
            self.rm(peer, key)
        pause = self.rng.uniform(0.0, 0.05)
        refused = self.last_op is not None and self.last_op.outcome == NOT_SENT
        if refused or self.rng.random() < 0.3:
            time.sleep(pause)  # and no busy loop against a dead peer

    def put(self, peer: str, key: str) -> None:
        """Write a unique value to `key` through `peer`."""
        self.seq += 1
        header = f"{key}|{self.client_name}|{self.seq}|".encode()
        data = header + self.rng.randbytes(value_size(self.rng, self.big))
        op = self._begin(peer, "put", key)
        op.value, op.size = digest(data), len(data)
        self.uploading = peer if self.big else None
        try:
            self._run(op, lambda: self.clients[peer].put(key, data))
        finally:
            self.uploading = None

    def rm(self, peer: str, key: str) -> None:
        """Delete `key` through `peer`."""
        op = self._begin(peer, "rm", key)
        self._run(op, lambda: self.clients[peer].rm(key))

    def get(self, peer: str, key: str) -> None:
        """Read `key` through `peer`, and every sibling's bytes when it has several."""
        op = self._begin(peer, "get", key)
        client = self.clients[peer]
        try:
            op.seen = frozenset([digest(client.get_bytes(key))])
        except Conflict as conflict:
            op.seen = self._siblings(op, client, conflict)
        except QfsError as e:
            self._failed(op, e)
            if e.status == 404:
                op.outcome, op.seen = READ, frozenset([ABSENT])
        else:
            op.outcome = READ
        op.end = time.monotonic()

    def _siblings(self, op: Op, client: Client, conflict: Conflict) -> frozenset[str]:
        """The digests of a conflict's siblings, each read back and checked by its hash."""
        seen = set()
        for sibling in conflict.siblings:
            seen.add(sibling["blake3"])
            try:
                data = client.get_bytes(op.key, version=sibling["version"])
            except QfsError as e:
                if not expected_failure(e, "get"):
                    self._unexpected(op, e)
                continue
            if digest(data) != sibling["blake3"]:
                self.history.problem(
                    "sibling bytes do not match its summary", op=op.summary(), sibling=sibling
                )
            seen.add(digest(data))
        op.outcome = READ
        return frozenset(seen)

    def _begin(self, peer: str, kind: str, key: str) -> Op:
        op = self.history.begin(self.client_name, peer, kind, key, time.monotonic())
        self.last_op = op
        return op

    def _run(self, op: Op, call: Callable[[], object]) -> None:
        try:
            result = call()
        except QfsError as e:
            self._failed(op, e)
        else:
            op.outcome = OK
            if isinstance(result, dict):
                op.version = str(result.get("version"))
        op.end = time.monotonic()

    def _failed(self, op: Op, error: QfsError) -> None:
        classify_failure(op, error)
        if not expected_failure(error, op.kind):
            self._unexpected(op, error)

    def _unexpected(self, op: Op, error: QfsError) -> None:
        self.history.problem(
            "unexpected failure", op=op.summary(), status=error.status, detail=str(error)
        )
