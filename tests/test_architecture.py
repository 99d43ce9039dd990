"""Architecture guard: the checker (tests/helpers/architecture.py) on the real package, and
self-tests proving each rule fails on a tiny synthetic package that breaks it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.helpers.architecture import (
    PACKAGE_DIR,
    SIZE_ALLOWLIST,
    layer_violations,
    load_modules,
    missing_layer_members,
    oversized,
    private_violations,
    size_violations,
    sql_violations,
)


def _fail_on(violations: list[str], what: str) -> None:
    if violations:
        listing = "\n  ".join(violations)
        pytest.fail(f"{len(violations)} {what}:\n  {listing}", pytrace=False)


# ---------------------------------------------------------------------------------------------
# The real package
# ---------------------------------------------------------------------------------------------


def test_the_guard_sees_the_package() -> None:
    """The checks read the real tree: an empty read would pass every check vacuously."""
    names = {m.name for m in load_modules(PACKAGE_DIR)}
    assert {"inboxsort", "inboxsort.cli", "inboxsort.db.session", "inboxsort.errors"} <= names


def test_layers() -> None:
    """Imports run down the layers only, and the three flows never import each other."""
    violations = layer_violations(PACKAGE_DIR) + missing_layer_members(PACKAGE_DIR)
    _fail_on(violations, "layer violations")


def test_no_private_names_across_modules() -> None:
    """No module imports or reads another package module's `_private` name."""
    _fail_on(private_violations(PACKAGE_DIR), "uses of another module's private name")


def test_no_sql_outside_db() -> None:
    """SQL is built only in inboxsort/db/."""
    _fail_on(sql_violations(PACKAGE_DIR), "SQL builder uses outside inboxsort/db/")


def test_sizes() -> None:
    """Modules ≤ 400 lines, functions ≤ 60 lines, unless allowlisted with a reason."""
    _fail_on(size_violations(PACKAGE_DIR), "size violations (fix, or add to SIZE_ALLOWLIST)")


def test_allowlist_reasons_are_one_line() -> None:
    """Each allowlist entry names `module:qualname` and says why in one line."""
    bad = [k for k, why in SIZE_ALLOWLIST.items() if ":" not in k or not why.strip() or "\n" in why]
    assert not bad


# ---------------------------------------------------------------------------------------------
# Self-tests: each checker on a tiny synthetic package reports what it must, and nothing else
# ---------------------------------------------------------------------------------------------


def write_package(root: Path, files: Mapping[str, str]) -> Path:
    """Write a fake inboxsort/ package under root from {relative path: source}; return it."""
    package_dir = root / "inboxsort"
    for rel, source in files.items():
        path = package_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return package_dir


def test_layer_checker_reports_each_violation(tmp_path: Path) -> None:
    """Upward, cross-flow, relative, TYPE_CHECKING and function-local imports are all caught."""
    package_dir = write_package(
        tmp_path,
        {
            "__init__.py": '__version__ = "0"\n',
            "__main__.py": "from inboxsort.cli import main\n",
            "cli/__init__.py": "from inboxsort import __version__\nmain = 1\n",
            "errors.py": "import inboxsort\n",
            "config.py": "from inboxsort.errors import E\n",
            "files.py": "from inboxsort import config\nimport inboxsort.errors\n",
            "db/__init__.py": "from .session import open_database\n",
            "db/session.py": """\
                from inboxsort.files import x

                def open_database():
                    from inboxsort.model.registry import Store
                """,
            "model/registry.py": """\
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from inboxsort.service.daemon import Daemon
                """,
            "intake/y.py": "from ..service import daemon\nfrom .z import thing\n",
            "intake/z.py": "from inboxsort.db import open_database\n",
            "library/x.py": "import inboxsort.intake.y\nfrom inboxsort.model import registry\n",
            "trainer/t.py": "def f():\n    from inboxsort.cli import main\n",
            "service/daemon.py": (
                "from inboxsort.intake.y import a\nfrom inboxsort.library import x\n"
            ),
            "web/__init__.py": "",
            "config_checks.py": "",
            "newthing.py": "",
        },
    )
    assert layer_violations(package_dir) == [
        "inboxsort.newthing is in no layer: add it to LAYERS in tests/test_architecture.py",
        "inboxsort.db.session → inboxsort.model.registry (layer model above layer db)"
        " at inboxsort/db/session.py:4",
        "inboxsort.intake.y → inboxsort.service.daemon (layer service above layer intake)"
        " at inboxsort/intake/y.py:1",
        "inboxsort.library.x → inboxsort.intake.y"
        " (flow intake beside flow library: flows are independent) at inboxsort/library/x.py:1",
        "inboxsort.model.registry → inboxsort.service.daemon (layer service above layer model)"
        " at inboxsort/model/registry.py:4",
        "inboxsort.trainer.t → inboxsort.cli (layer entry above layer trainer)"
        " at inboxsort/trainer/t.py:2",
    ]
    assert missing_layer_members(package_dir) == [
        f"LAYERS names inboxsort.{member}, which does not exist: rename or remove it"
        for member in ("backfill", "dirfd", "imageio", "layout", "own_filings", "backoff")
    ]


def test_private_checker_reports_each_violation(tmp_path: Path) -> None:
    """Private names read by import, relative import or attribute are caught; own use is not."""
    package_dir = write_package(
        tmp_path,
        {
            "__init__.py": '__version__ = "0"\n',
            "db/__init__.py": (
                "from inboxsort.db._impl import helper\nfrom .session import _CACHE\n"
            ),
            "db/_impl.py": "helper = 1\n",
            "db/session.py": """\
                _CACHE = {}

                def _private():
                    return _CACHE
                """,
            "intake/y.py": "from inboxsort.db.session import _private\n",
            "intake/z.py": """\
                import inboxsort.db.session

                def f():
                    return inboxsort.db.session._CACHE
                """,
            "library/x.py": """\
                from inboxsort import __version__
                from inboxsort.db import _impl
                from inboxsort.db import session as s

                s._private()
                """,
            "library/w.py": """\
                from inboxsort.db import session

                def f(session):
                    return session._private

                class C:
                    session = None

                    def m(self):
                        return session._CACHE
                """,
            "trainer/t.py": "from ..db.session import _private as p\n",
        },
    )
    assert private_violations(package_dir) == [
        "inboxsort.db → inboxsort.db.session._CACHE (private to inboxsort.db.session)"
        " at inboxsort/db/__init__.py:2",
        "inboxsort.intake.y → inboxsort.db.session._private (private to inboxsort.db.session)"
        " at inboxsort/intake/y.py:1",
        "inboxsort.intake.z → inboxsort.db.session._CACHE (private to inboxsort.db.session)"
        " at inboxsort/intake/z.py:4",
        "inboxsort.library.w → inboxsort.db.session._CACHE (private to inboxsort.db.session)"
        " at inboxsort/library/w.py:10",
        "inboxsort.library.x → inboxsort.db._impl (private to inboxsort.db)"
        " at inboxsort/library/x.py:2",
        "inboxsort.library.x → inboxsort.db.session._private (private to inboxsort.db.session)"
        " at inboxsort/library/x.py:5",
        "inboxsort.trainer.t → inboxsort.db.session._private (private to inboxsort.db.session)"
        " at inboxsort/trainer/t.py:1",
    ]


def test_sql_checker_reports_each_violation(tmp_path: Path) -> None:
    """SQL builders imported or used via `sa.` outside db/ are caught; Session and co. are not."""
    package_dir = write_package(
        tmp_path,
        {
            "db/queries.py": "from sqlalchemy import func, select\nimport sqlalchemy as sa\n",
            "intake/y.py": "from sqlalchemy import Select, select\n",
            "library/x.py": """\
                import sqlalchemy as sa
                from sqlalchemy import make_url
                from sqlalchemy.exc import SQLAlchemyError
                from sqlalchemy.orm import Session

                def f():
                    return sa.select(1)
                """,
            "model/r.py": """\
                from typing import TYPE_CHECKING
                import sqlalchemy

                if TYPE_CHECKING:
                    from sqlalchemy.sql.expression import text

                n = sqlalchemy.func.count()
                """,
            "service/s.py": "from sqlalchemy import sql\n\nsql.update\n",
        },
    )
    assert sql_violations(package_dir) == [
        "inboxsort.intake.y → sqlalchemy.select (SQL outside inboxsort.db)"
        " at inboxsort/intake/y.py:1",
        "inboxsort.library.x → sqlalchemy.select (SQL outside inboxsort.db)"
        " at inboxsort/library/x.py:7",
        "inboxsort.model.r → sqlalchemy.sql.expression.text (SQL outside inboxsort.db)"
        " at inboxsort/model/r.py:5",
        "inboxsort.model.r → sqlalchemy.func (SQL outside inboxsort.db) at inboxsort/model/r.py:7",
        "inboxsort.service.s → sqlalchemy.sql.update (SQL outside inboxsort.db)"
        " at inboxsort/service/s.py:3",
    ]


def _function(name: str, lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}():\n{body}"


def test_size_checker_reports_each_violation(tmp_path: Path) -> None:
    """A 61-line function or method and a 401-line module are caught; 60 and 400 are not."""
    method = "class C:\n" + _function("m", 61, "    ")
    fitting = "@decorator\n@decorator\n" + _function("fits", 60)
    nested = _function("outer", 10) + _function("inner", 61, "    ")
    package_dir = write_package(
        tmp_path,
        {
            "intake/y.py": "\n".join([_function("long", 61), fitting, method, nested]),
            "big.py": "x = 1\n" * 401,
            "edge.py": "x = 1\n" * 400,
        },
    )
    assert size_violations(package_dir) == [
        '"inboxsort.big:<module>": 401 lines (max 400) at inboxsort/big.py',
        '"inboxsort.intake.y:long": 61 lines (max 60) at inboxsort/intake/y.py:1',
        '"inboxsort.intake.y:C.m": 61 lines (max 60) at inboxsort/intake/y.py:127',
        '"inboxsort.intake.y:outer": 71 lines (max 60) at inboxsort/intake/y.py:189',
        '"inboxsort.intake.y:outer.<locals>.inner": 61 lines (max 60) at inboxsort/intake/y.py:199',
    ]
    allow = {o.key: "reason" for o in oversized(package_dir)}
    assert size_violations(package_dir, allow) == []
    stale = {**allow, "inboxsort.edge:<module>": "was long once"}
    assert size_violations(package_dir, stale) == [
        '"inboxsort.edge:<module>" is in SIZE_ALLOWLIST but nothing by that name is oversized:'
        " remove it"
    ]
