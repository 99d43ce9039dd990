"""inboxsort: watch an inbox, classify images in batches, file them, learn from corrections."""

from __future__ import annotations

__version__ = "0.1.0"
