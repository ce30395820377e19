"""Interpreter settings for the serving process, measured with `bench/serve.py`.

Two CPython defaults hurt a process that serves TensorFlow models from an
event loop plus one inference thread per version:

- The GIL switch interval (5 ms): the event loop and an inference thread
  hand the GIL to each other several times per batch, and a thread that
  wants it back while the other runs Python waits up to the interval.
- The cyclic garbage collector: TensorFlow and Keras leave about 400 000
  long-lived Python objects, and every full collection walks all of them,
  stalling the event loop for about 250 ms every few seconds under load.

The app calls `tune_for_serving()` once at start-up and `settle_heap()` after
loading or swapping versions.
"""

from __future__ import annotations

import gc
import sys
import time

# 0.5 ms: short enough that a finished batch reaches the event loop quickly,
# long enough that switching itself stays a small cost.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005


def tune_for_serving(switch_interval: float = GIL_SWITCH_INTERVAL_SECONDS) -> None:
    """Shorten the GIL switch interval for this process."""
    if switch_interval <= 0:
        raise ValueError(f"switch_interval must be positive, got {switch_interval}")
    sys.setswitchinterval(switch_interval)


def settle_heap() -> float:
    """Collect garbage once, then move every surviving object out of the collector's reach.

    Objects frozen earlier are unfrozen first, so that a version swapped out
    since the last call can be freed. The collection itself pauses the
    process once (about 250 ms with TensorFlow loaded); afterwards full
    collections only walk objects created since. Returns the seconds it took.
    """
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started
