"""The few exception types inboxsort raises; each is caught at an edge (per image, or the CLI)."""

from __future__ import annotations


class InboxsortError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class ConfigError(InboxsortError):
    """The configuration or the environment it names is unusable (exit code 2)."""

    exit_code = 2


class StoreError(InboxsortError):
    """The database cannot be opened, migrated or written."""


class ModelError(InboxsortError):
    """A model cannot be built, loaded or trained."""


class BadImage(InboxsortError):
    """One input file is not a usable image; it goes to failed/ with this reason."""
