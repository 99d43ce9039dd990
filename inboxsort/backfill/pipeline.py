"""Ray Data under backfill: a dataset of paths, decoding in tasks, the model in a pool of actors.

Everything that runs on a Ray worker is here and importable there (inboxsort installed on every
node); the driver only builds the dataset and iterates over its output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inboxsort.errors import BadImage, ConfigError, ModelError
from inboxsort.imageio import decode_image
from inboxsort.model.artifact import CARD_FILE, MODEL_FILE, load_classifier, read_card
from inboxsort.model.litert import LITERT_FILE

if TYPE_CHECKING:
    # Only for types: each Ray worker imports this module, and scan brings in the database.
    from inboxsort.backfill.scan import Candidate

log = logging.getLogger(__name__)

# On a 2-core machine an actor that reserves a whole CPU leaves none for the decode tasks, and
# Ray Data then waits forever; halves let two actors and two decode tasks run side by side.
ACTOR_CPUS = 0.5
DECODE_CPUS = 0.5
BATCH = 32
_BLOCK_ROWS = 128
COLUMNS = ("path", "size", "mtime_ns", "device", "inode")


@dataclass(frozen=True)
class Artifact:
    """A model version's files as bytes, with the SHA-256 each must have where it is loaded."""

    version: int
    runtime: str  # "litert" or "keras"
    files: dict[str, bytes]
    sha256: dict[str, str]


def read_artifact(folder: Path, *, version: int, runtime: str) -> Artifact:
    """The files a version serves from under `runtime`, read once in the driver."""
    card = read_card(folder)
    names = [CARD_FILE]
    expected: dict[str, str] = {}
    if runtime == "litert":
        entry = card.get("litert") or {}
        name = str(entry.get("file", LITERT_FILE))
        names.append(name)
        expected[name] = str(entry.get("sha256"))
    else:
        names.append(MODEL_FILE)
    files = {name: (folder / name).read_bytes() for name in names}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    for name, want in expected.items():
        if digests[name] != want:
            raise ModelError(f"{folder / name} does not match the SHA-256 its card records")
    return Artifact(version, runtime, files, digests)


def decode_batch(batch: dict[str, np.ndarray], *, size: int) -> dict[str, np.ndarray]:
    """Read, hash and decode each file of a batch; a bad file gets its reason, never an error."""
    count = len(batch["path"])
    pixels = np.zeros((count, size, size, 3), dtype=np.uint8)
    hashes, errors = [""] * count, [""] * count
    sizes, mtimes = np.array(batch["size"]), np.array(batch["mtime_ns"])
    for i, path in enumerate(batch["path"]):
        try:
            fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                st = os.fstat(handle.fileno())
                data = handle.read()
        except OSError as exc:
            errors[i] = f"cannot read: {exc.strerror or exc}"
            continue
        # What was read is what the row describes, should the file have changed since the scan.
        sizes[i], mtimes[i] = len(data), st.st_mtime_ns
        hashes[i] = hashlib.sha256(data).hexdigest()
        try:
            pixels[i] = decode_image(data, size)
        except BadImage as exc:
            errors[i] = str(exc)
    out = dict(batch)
    out.update(size=sizes, mtime_ns=mtimes, pixels=pixels)
    out.update(sha256=np.array(hashes, dtype=object), error=np.array(errors, dtype=object))
    return out


class Classify:
    """A Ray actor: loads the model once, checked by SHA-256, and labels batches of pixels."""

    def __init__(self, shipped: list[Any]) -> None:
        import ray

        # `shipped` holds the ObjectRef of the Artifact, which the driver keeps alive for the
        # whole run, so that an actor restarted after a crash can fetch the model again.
        artifact: Artifact = ray.get(shipped[0])
        self.node = f"{socket.gethostname()}:{os.getpid()}"
        with tempfile.TemporaryDirectory(prefix="inboxsort-backfill-") as folder:
            for name, data in artifact.files.items():
                if hashlib.sha256(data).hexdigest() != artifact.sha256[name]:
                    raise ModelError(f"model version {artifact.version}: {name} arrived damaged")
                (Path(folder) / name).write_bytes(data)
            # LiteRT reads the flatbuffer into memory and Keras its file: the folder can go.
            # One thread: the pool has one actor per CPU, as the daemon has one per worker.
            self.classifier = load_classifier(
                Path(folder), version=artifact.version, runtime=artifact.runtime, threads=1
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Labels and scores for the images of a batch that decoded; the pixels are dropped."""
        out = {k: v for k, v in batch.items() if k != "pixels"}
        count = len(batch["path"])
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        labels = np.array([""] * count, dtype=object)
        scores = np.full(count, np.nan)
        if ok.any():
            for i, p in zip(
                np.flatnonzero(ok), self.classifier.predict(batch["pixels"][ok]), strict=True
            ):
                labels[i], scores[i] = p.label, p.score
        out.update(label=labels, score=scores, node=np.array([self.node] * count, dtype=object))
        out["version"] = np.full(count, self.classifier.version)
        return out


def image_size(artifact: Artifact) -> int:
    """The input size of the artifact's model, from its card."""
    return int(json.loads(artifact.files[CARD_FILE])["image_size"])


def start_ray(address: str | None, *, cpus: int | None = None, forward_logs: bool = False) -> bool:
    """Start Ray on this machine's cores (no address) or join the cluster at `address`.

    False when Ray was already started in this process (a test, a notebook): the caller then
    leaves it running.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "backfill needs Ray Data, which is not installed: pip install 'inboxsort[cluster]'"
        ) from None
    if ray.is_initialized():
        return False
    # Workers' output stays in Ray's logs, except for a driver run on the cluster (ray://),
    # whose progress lines are what the user watches.
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": forward_logs}
    try:
        if address is None:
            # "local": a Ray of its own, even where `ray start` left a cluster running here.
            ray.init(
                address="local",
                num_cpus=cpus or os.cpu_count(),
                include_dashboard=False,
                **options,
            )
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"backfill: cannot start or reach Ray at {address or 'local'}: {exc}"
        ) from None
    return True


def actor_count() -> int:
    """One model actor per CPU of the cluster."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


def results(
    todo: Sequence[Candidate], artifact: Artifact, *, size: int, actors: int
) -> Generator[dict[str, np.ndarray], None, None]:
    """Stream the classified batches back to the driver as the pool finishes them."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    # After Ray Data's import, which sets its loggers up: the command prints its own progress.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the command draws its own
    context.print_on_execution_start = False
    items = [
        {
            "path": c.text,
            "size": c.size,
            "mtime_ns": c.mtime_ns,
            "device": c.device,
            "inode": c.inode,
        }
        for c in todo
    ]
    shipped = ray.put(artifact)
    # Enough blocks for every actor to have work from the start, and small ones, so that a
    # killed actor's batch is all that is done again.
    blocks = max(2 * actors, -(-len(items) // _BLOCK_ROWS))
    # Any: Ray's stubs type the UDF arguments narrower than the numpy batches used here.
    ds: Any = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"size": size},
        batch_size=BATCH,
        batch_format="numpy",
        num_cpus=DECODE_CPUS,
    )
    # Ray Data restarts a killed actor (max_restarts=-1) and runs its batch again
    # (max_task_retries=-1) by default: each image still gets a result, and the writer drops
    # any it has already recorded.
    ds = ds.map_batches(
        Classify,
        # Wrapped in a list: a ref as the argument itself would be fetched by Ray before the
        # constructor runs and copied into the actor's arguments (and Ray warns that a
        # restart could lose it).
        fn_constructor_kwargs={"shipped": [shipped]},
        batch_size=BATCH,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=actors),
        num_cpus=ACTOR_CPUS,
    )
    yield from ds.iter_batches(batch_size=BATCH, batch_format="numpy", prefetch_batches=1)
