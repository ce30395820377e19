"""Interpreter settings for serving: the GIL switch interval and a frozen heap."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from app.core.runtime import settle_heap, tune_for_serving


@pytest.fixture
def restore_interpreter() -> Iterator[None]:
    """Put the switch interval and the frozen generation back as they were."""
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)
    gc.unfreeze()


@pytest.mark.usefixtures("restore_interpreter")
def test_tune_for_serving_shortens_the_switch_interval() -> None:
    tune_for_serving(0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_tune_for_serving_refuses_a_zero_interval() -> None:
    with pytest.raises(ValueError, match="switch_interval must be positive, got 0"):
        tune_for_serving(0)


class Node:
    """A cycle member: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.partner: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    """Two nodes that point at each other, and a weak reference to one of them."""
    first, second = Node(), Node()
    first.partner, second.partner = second, first
    return first, weakref.ref(first)


@pytest.mark.usefixtures("restore_interpreter")
def test_settle_heap_frees_garbage_and_freezes_survivors() -> None:
    garbage, garbage_ref = cycle()
    survivor, survivor_ref = cycle()
    del garbage
    assert settle_heap() >= 0
    assert garbage_ref() is None
    assert survivor_ref() is survivor
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restore_interpreter")
def test_settle_heap_frees_what_was_frozen_and_dropped_since() -> None:
    # A swapped-out model version: frozen while served, dropped afterwards.
    retired, retired_ref = cycle()
    settle_heap()
    del retired
    settle_heap()
    assert retired_ref() is None
