"""The value checks of config.toml's keys: each names what a valid value is, for the error."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# (section, key) -> check returning an error description, or None when the value is fine.
POSITIVE = "a number greater than 0"
CHECKS: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("train", "image_size"): (lambda v: 32 <= v <= 1024, "an integer from 32 to 1024"),
    ("train", "batch_size"): (lambda v: v > 0, POSITIVE),
    ("train", "epochs"): (lambda v: v >= 0, "0 or more"),
    ("train", "fine_tune_epochs"): (lambda v: v >= 0, "0 or more"),
    ("train", "fine_tune_at"): (lambda v: v >= 0, "0 or more"),
    ("train", "learning_rate"): (lambda v: v > 0, POSITIVE),
    ("train", "fine_tune_learning_rate"): (lambda v: v > 0, POSITIVE),
    ("train", "label_smoothing"): (lambda v: 0 <= v < 1, "a number from 0 to below 1"),
    ("batch", "max_size"): (lambda v: v > 0, POSITIVE),
    ("batch", "max_delay_ms"): (lambda v: v >= 0, "0 or more"),
    ("batch", "queue_size"): (lambda v: v > 0, POSITIVE),
    ("batch", "decode_workers"): (lambda v: 1 <= v <= 64, "an integer from 1 to 64"),
    ("batch", "inference_workers"): (lambda v: 1 <= v <= 16, "an integer from 1 to 16"),
    ("watch", "poll_interval_seconds"): (lambda v: v > 0, POSITIVE),
    ("watch", "settle_seconds"): (lambda v: v >= 0, "0 or more"),
    ("watch", "writer_timeout_seconds"): (lambda v: v >= 0, "0 or more"),
    ("watch", "rescan_seconds"): (lambda v: v >= 0, "0 or more (0 turns rescans off)"),
    ("filing", "duplicates"): (lambda v: v in ("keep", "move"), '"keep" or "move"'),
    ("filing", "review_below"): (lambda v: 0 <= v <= 1, "a probability from 0 to 1"),
    ("retrain", "every_minutes"): (lambda v: v > 0, POSITIVE),
    ("retrain", "min_new_corrections"): (lambda v: v >= 0, "0 or more"),
    ("retrain", "tolerance"): (lambda v: 0 <= v <= 1, "a fraction from 0 to 1"),
    ("retrain", "max_minutes"): (lambda v: v > 0, POSITIVE),
    ("retrain", "epochs"): (lambda v: v > 0, POSITIVE),
    ("retrain", "replay"): (lambda v: v >= 0, "0 or more"),
    ("retrain", "holdout"): (lambda v: 0 < v < 1, "a fraction between 0 and 1"),
    ("retrain", "nice"): (lambda v: 0 <= v <= 19, "an integer from 0 to 19"),
    ("serving", "runtime"): (
        lambda v: v in ("auto", "litert", "keras"),
        '"auto", "litert" or "keras"',
    ),
    ("web", "port"): (lambda v: 1 <= v <= 65535, "a port from 1 to 65535"),
    ("web", "host"): (lambda v: bool(v.strip()), "an address to listen on"),
    ("web", "page_size"): (lambda v: 1 <= v <= 500, "an integer from 1 to 500"),
    ("node", "stale_seconds"): (lambda v: v >= 5, "5 seconds or more"),
    ("node", "name"): (
        lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v) is not None,
        "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
    (
        "logging",
        "level",
    ): (
        lambda v: v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
        "DEBUG, INFO, WARNING or ERROR",
    ),
}
