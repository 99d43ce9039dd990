"""Several inference workers: batches side by side, each image labelled as the model alone would.

The real Daemon in this process with the tiny Keras model; the thread split of TensorFlow is
checked in a fresh interpreter, because it can only be set before TensorFlow runs an op.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from inboxsort.imageio import load_image
from tests.helpers.daemonkit import running_daemon, wait_for


@pytest.mark.parametrize("workers", [1, 3])
def test_each_image_gets_the_label_and_score_the_model_gives_it_alone(
    new_site, validation_jpegs, workers, caplog
):
    caplog.set_level(logging.INFO, logger="inboxsort")
    site = new_site(batch={"max_size": 8, "inference_workers": workers})
    images = [*validation_jpegs["cats"][:40], *validation_jpegs["dogs"][:40]]
    with running_daemon(site) as daemon:
        for path in images:
            shutil.copyfile(path, site.inbox / path.name)
        wait_for(lambda: site.settled(len(images)), "80 images filed", describe=site.describe)
        classifier = daemon.model.current()
        assert (daemon.inference.processed, daemon.inference.failed) == (len(images), 0)

    alone = classifier.predict(np.stack([load_image(p, classifier.image_size) for p in images]))
    expected = {p.name: prediction for p, prediction in zip(images, alone, strict=True)}
    rows = site.rows()
    assert sorted(r.original_name for r in rows) == sorted(expected)
    for row in rows:
        assert row.label == expected[row.original_name].label, row.original_name
        assert row.score == pytest.approx(expected[row.original_name].score, abs=1e-5)
    # The batches really were spread over the workers: the batch log lines name their thread.
    threads = {
        r.threadName
        for r in caplog.records
        if r.name == "inboxsort.intake.inference" and r.getMessage().startswith("batch of ")
    }
    assert threads <= {f"inference-{n}" for n in range(1, workers + 1)}, threads
    assert len(threads) > 1 if workers > 1 else threads == {"inference-1"}, threads


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_the_cores_are_split_between_the_inference_workers(cli_env, workers):
    code = (
        "import sys, tensorflow as tf\n"
        "from inboxsort.model.cores import share_cores\n"
        "share_cores(int(sys.argv[1]))\n"
        "tf.constant(1.0) + 1.0  # the first op fixes the pools\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(workers)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    cores = len(os.sched_getaffinity(0))
    intra, inter = map(int, done.stdout.split())
    assert intra == max(1, cores // workers)
    assert inter == max(2, workers)


def test_splitting_the_cores_after_tensorflow_ran_leaves_them_as_they_are(tiny_model):
    import tensorflow as tf

    from inboxsort.model.cores import share_cores

    tf.constant(1.0) + 1.0  # TensorFlow has run an op in this process (the tiny model did)
    before = tf.config.threading.get_intra_op_parallelism_threads()
    share_cores(64)
    assert tf.config.threading.get_intra_op_parallelism_threads() == before
