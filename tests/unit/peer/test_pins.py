"""What garbage collection must spare: pins of writes in progress and blocks noted since a mark."""

from __future__ import annotations

import pytest

from peer.pins import BlockActivity, BlockPins


def test_pins_are_counted_and_released() -> None:
    pins = BlockPins()
    pins.hold(["a", "b"])
    pins.hold(["a"])
    pins.release(["a"])
    assert pins.held() == {"a", "b"}
    pins.release(["a", "b"])
    assert pins.held() == set()
    with pytest.raises(RuntimeError), pins.pinned(["c"]):
        assert pins.held() == {"c"}
        raise RuntimeError
    assert pins.held() == set()


def test_a_block_noted_after_the_mark_is_spared_and_one_before_is_not() -> None:
    activity = BlockActivity()
    activity.note(["old"])
    deleted: list[str] = []

    def delete(block: str) -> bool:
        deleted.append(block)
        return True

    mark = activity.mark()
    activity.note(["new"])
    assert activity.delete_unless_noted("new", mark, delete) is False
    assert activity.delete_unless_noted("old", mark, delete) is True
    assert deleted == ["old"]
    activity.done(mark)
    assert activity.delete_unless_noted("old", mark, delete) is False  # closed: nothing runs


def test_marks_of_rounds_that_never_finish_are_bounded() -> None:
    activity = BlockActivity()
    first = activity.mark()
    for _ in range(BlockActivity.MAX_OPEN):
        activity.note(["x"])
        activity.mark()
    assert activity.delete_unless_noted("x", first, lambda b: True) is False
