"""`python -m inboxsort` runs the command line."""

from __future__ import annotations

import sys

from inboxsort.cli import main

if __name__ == "__main__":
    sys.exit(main())
