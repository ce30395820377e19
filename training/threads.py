"""Keeping a training process from starving the API's /predict.

TensorFlow sizes its thread pools to every core by default, so one training
job would compete for every core with the serving process. A spawned training
process calls `limit_training_resources` first thing, before TensorFlow runs
any op: its thread pools are capped, and the OS is told to prefer other
processes. See docs/design.md, "Training jobs".
"""

from __future__ import annotations

import contextlib
import logging
import os

logger = logging.getLogger("stockcast.training")

# Libraries that size their own thread pools from these at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def limit_training_resources(threads: int, niceness: int) -> None:
    """Cap TensorFlow and BLAS at `threads` threads and lower this process's priority by `niceness`.

    Must run before TensorFlow executes its first op: TensorFlow fixes its
    thread pools then, and later changes are refused (logged, not raised, so
    a late call still lowers the priority). Lowering the priority never needs
    privileges; a negative `niceness` (raising it) is ignored without them.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    # One op at a time: the inter-op pool only schedules ops, each of which
    # then uses the intra-op threads, so this keeps the total at `threads`.
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    if niceness:
        with contextlib.suppress(PermissionError, OSError):
            os.nice(niceness)
    # SCHED_BATCH (Linux, no privileges needed) tells the scheduler that this
    # process is CPU-bound and should not preempt interactive ones on wake-up.
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        with contextlib.suppress(PermissionError, OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))

    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as error:
        logger.warning("TensorFlow already started; its thread pools stay as they are: %s", error)
