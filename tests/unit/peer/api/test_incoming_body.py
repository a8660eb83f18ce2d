"""Upload bodies read as they arrive: sizes, backpressure, the end, a lost connection."""

from __future__ import annotations

import io

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from peer.api.incoming import BodyLost, IncomingBody
from peer.body import FileBody, PrefixedBody


class Producer:
    """Records whether the body has paused the (fake) client connection."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        assert self.paused
        self.paused = False

    def stopProducing(self) -> None:
        pass


def start(coroutine) -> defer.Deferred:  # type: ignore[no-untyped-def]
    return defer.ensureDeferred(coroutine)


def result(deferred: defer.Deferred):  # type: ignore[no-untyped-def]
    """The value a finished Deferred holds; raises what it failed with."""
    box: list = []
    deferred.addBoth(box.append)
    assert box, "still waiting"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def test_reads_wait_for_whole_blocks_and_the_end_gives_the_rest() -> None:
    body = IncomingBody(Producer(), high_water=100)
    first = start(body.read(10))
    body.write(b"abcd")
    assert not first.called  # 4 of 10 bytes: keep waiting
    body.write(b"efghijkl")
    assert result(first) == b"abcdefghij"
    second = start(body.read(10))
    assert not second.called
    body.finish()
    assert result(second) == b"kl"
    assert result(start(body.read(10))) == b""
    assert body.tell() == 12


def test_a_reader_is_woken_once_its_block_is_in_not_for_every_piece() -> None:
    """Over TLS a 1 MiB block arrives as 64 records: waking the coordinator for each cost it
    a coroutine resumption per 16 KiB."""
    body = IncomingBody(Producer(), high_water=100)
    reading = start(body.read(64))
    waiting = body._arrived  # the read's Deferred: a woken reader that goes back waits anew
    for _ in range(15):
        body.write(b"x" * 4)
    assert body._arrived is waiting and not waiting.called
    body.write(b"x" * 4)
    assert result(reading) == b"x" * 64


def test_the_client_is_paused_above_high_water_and_resumed_when_drained() -> None:
    producer = Producer()
    body = IncomingBody(producer, high_water=8)
    for _ in range(4):
        body.write(b"xxx")  # 12 bytes buffered, over 8
    assert producer.paused
    assert result(start(body.read(3))) == b"xxx"
    assert producer.paused  # 9 left: still over half of high water
    assert result(start(body.read(6))) == b"xxxxxx"
    assert not producer.paused


def test_a_reader_that_wants_more_than_high_water_resumes_the_client() -> None:
    producer = Producer()
    body = IncomingBody(producer, high_water=4)
    reading = start(body.read(10))
    body.write(b"123456")
    assert producer.paused is False  # the waiting reader needs more: never left paused
    body.write(b"7890")
    assert result(reading) == b"1234567890"


def test_a_lost_connection_fails_the_reader_with_what_arrived() -> None:
    body = IncomingBody(Producer(), high_water=100)
    reading = start(body.read(10))
    body.write(b"abc")
    body.close()
    with pytest.raises(BodyLost, match="after 3 bytes"):
        result(reading)
    with pytest.raises(BodyLost):
        result(start(body.read(1)))


def test_close_after_finish_is_not_a_loss() -> None:
    body = IncomingBody(Producer(), high_water=100)
    body.write(b"all")
    body.finish()
    body.close()  # twisted closes a request's content when the response is done
    assert result(start(body.read(10))) == b""  # closing dropped nothing the reader needs


def test_discard_drops_the_rest_and_settles_at_the_end() -> None:
    producer = Producer()
    body = IncomingBody(producer, high_water=4)
    body.write(b"123456")
    assert producer.paused
    body.discard()
    assert not producer.paused
    body.write(b"more that nobody reads")
    settled = start(body.settled())
    assert not settled.called
    body.finish()
    assert settled.called
    assert body.tell() == 28


def test_settled_fires_when_the_connection_is_lost() -> None:
    body = IncomingBody(Producer(), high_water=4)
    settled = start(body.settled())
    body.close()
    assert settled.called


def test_file_body_and_prefixed_body_give_exact_sizes() -> None:
    class Trickle(io.RawIOBase):
        """A file that returns at most 3 bytes per read, like a pipe."""

        def __init__(self, data: bytes) -> None:
            self._data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            chunk, self._data = self._data[: min(size, 3)], self._data[min(size, 3) :]
            return chunk

    body = PrefixedBody(b"HEAD", FileBody(Trickle(b"0123456789")))  # type: ignore[arg-type]
    assert result(start(body.read(2))) == b"HE"
    assert result(start(body.read(5))) == b"AD012"
    assert result(start(body.read(100))) == b"3456789"
    assert result(start(body.read(100))) == b""
