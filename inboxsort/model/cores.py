"""How TensorFlow's thread pools share the cores between inference workers."""

from __future__ import annotations

import logging
import os

from inboxsort.model.nativelog import import_tensorflow

log = logging.getLogger(__name__)


def share_cores(workers: int) -> None:
    """Split the cores between `workers` inference workers; call before TensorFlow runs an op."""
    tf = import_tensorflow()
    cores = len(os.sched_getaffinity(0))
    # Batches side by side, each on its share of the cores, beat one batch on all of them: a
    # kernel split over every core waits for its slowest shard, and on a small machine a
    # decode thread preempting one shard stalls the whole op (README, Results).
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cores // workers))
        tf.config.threading.set_inter_op_parallelism_threads(max(2, workers))
    except RuntimeError:  # TensorFlow already ran here (several daemons in one test process)
        log.debug("TensorFlow is already initialised; its thread pools stay as they are")
