"""The library's layout: one folder per class plus a review folder, and where a path sits in it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inboxsort.errors import ConfigError

REVIEW_FOLDER = "_review"


@dataclass(frozen=True)
class Placement:
    """Where a path sits: inside the library or not, in a class folder, in the review folder."""

    inside: bool
    label: str | None = None
    review: bool = False


def placement(
    path: Path, *, library: Path, classes: Sequence[str], review_folder: str = REVIEW_FOLDER
) -> Placement:
    """Tell which top-level library folder `path` is in and whether that folder is a class."""
    try:
        parts = path.relative_to(library).parts
    except ValueError:
        return Placement(inside=False)
    # The top folder decides: library/cats/2024/x.jpg is a cat; library/x.jpg is in no folder.
    top = parts[0] if len(parts) > 1 else None
    return Placement(
        inside=True, label=top if top in classes else None, review=top == review_folder
    )


def still_filed_as(path: Path, label: str, *, library: Path) -> bool:
    """Whether a filed image still sits right in library/<label>/: a label the user let stand.

    An image in _review/, in another folder, or moved deeper is not a confirmation of it.
    """
    return path.parent == library / label


def check_class(label: str, classes: Sequence[str]) -> None:
    """Raise ConfigError (exit 2) naming the allowed classes when `label` is not one of them."""
    if label not in classes:
        raise ConfigError(f"unknown class {label!r}: expected one of {', '.join(classes)}")
