"""Interpreter settings for the processes that serve models.

Two CPython defaults hurt them:

- The GIL switch interval: in the inference process the main thread runs
  batches while loader and XLA-compiler threads work, and a thread that wants
  the GIL back waits up to the interval.
- The cyclic garbage collector: TensorFlow and Keras leave hundreds of
  thousands of long-lived objects, and every full collection walks them all,
  stalling the process under load.

Both processes call `tune_for_serving()` once at start-up and `settle_heap()`
after loading or swapping versions. See docs/design.md, "Serving path".
"""

from __future__ import annotations

import gc
import sys
import time

# A tenth of CPython's default: short enough that a batch is not held up by a
# loading thread for long, long enough that switching itself stays cheap.
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
    process once; afterwards full collections only walk objects created
    since. Returns the seconds it took.
    """
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started
