"""Interpreter settings for the serving processes, measured with `bench/serve.py`.

Two CPython defaults hurt the processes that serve models:

- The GIL switch interval (5 ms): in the inference process the main thread
  runs batches while loader and XLA-compiler threads work, and a thread that
  wants the GIL back while another runs Python waits up to the interval.
- The cyclic garbage collector: TensorFlow and Keras leave about 400 000
  long-lived Python objects, and every full collection walks all of them,
  stalling the process for about 250 ms every few seconds under load. The
  API process no longer imports TensorFlow, but freezing what its start-up
  left costs one collection and keeps later ones short there too.

Both processes call `tune_for_serving()` once at start-up and `settle_heap()`
after loading or swapping versions.
"""

from __future__ import annotations

import gc
import sys
import time

# 0.5 ms: short enough that a batch is not held up by a loading thread for
# long, long enough that switching itself stays a small cost.
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
