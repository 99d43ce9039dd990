"""The architecture checker: layers, private names, SQL only in db/, and sizes, read with `ast`.

The package is parsed, never imported: importing it would pull in TensorFlow and take seconds.
Every check is a plain function taking the package folder and returning violations as strings,
so tests/test_architecture.py runs them on the real package and on tiny synthetic ones.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "inboxsort"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Layer:
    """One layer: the names directly under inboxsort/ (module stem or package folder) in it."""

    name: str
    members: tuple[str, ...]
    # True for the flows: members share a rank but must not import one another.
    independent: bool = False


# Top to bottom; a module may import its own layer and any layer below it. "__init__" is the
# package root `inboxsort` itself (it holds `__version__`).
LAYERS: tuple[Layer, ...] = (
    Layer("entry", ("cli", "__main__")),
    Layer("service", ("service", "backfill", "web")),
    Layer("flows", ("intake", "library", "trainer"), independent=True),
    Layer("model", ("model",)),
    Layer("db", ("db",)),
    Layer(
        "primitives",
        (
            "files",
            "dirfd",
            "imageio",
            "layout",
            "own_filings",
            "backoff",
            "config",
            "config_checks",
        ),
    ),
    Layer("base", ("errors", "__init__")),
)

# "module:qualname" -> one-line reason; "module:<module>" for a whole module over its limit.
# Every entry must still be needed: one that matches no offender fails the size test.
SIZE_ALLOWLIST: dict[str, str] = {}

# SQL builders: outside inboxsort/db/ code asks the db package's query functions instead.
SQL_NAMES = frozenset(
    {
        "select",
        "update",
        "delete",
        "insert",
        "exists",
        "func",
        "text",
        "or_",
        "and_",
        "not_",
        "case",
        "literal",
    }
)

_SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.ClassDef,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)


@dataclass(frozen=True)
class Module:
    """One parsed .py file of the package."""

    name: str
    path: Path
    where: str
    tree: ast.Module
    lines: int
    is_package: bool

    @property
    def top(self) -> str:
        """The name directly under the package root that holds this module."""
        return top_of(self.name)


def top_of(dotted: str) -> str:
    """`inboxsort.db.session` -> `db`; the package root `inboxsort` -> `__init__`."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def load_modules(package_dir: Path) -> list[Module]:
    """Parse every .py file under package_dir, in path order."""
    modules = []
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.relative_to(package_dir).parts:
            continue
        stat = path.stat()
        modules.append(_load(package_dir, path, stat.st_mtime_ns, stat.st_size))
    return modules


# Each test reads the whole package; parsing once keeps the file fast. The key holds mtime and
# size, so a file edited between tests (others work in this tree) is parsed again.
@functools.cache
def _load(package_dir: Path, path: Path, mtime_ns: int, size: int) -> Module:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    source = path.read_text(encoding="utf-8")
    return Module(
        name=".".join(parts),
        path=path,
        where=path.relative_to(package_dir.parent).as_posix(),
        tree=ast.parse(source, filename=str(path)),
        lines=len(source.splitlines()),
        is_package=is_package,
    )


def known_names(modules: list[Module]) -> set[str]:
    """Dotted names of every module and package, folders without __init__.py included."""
    known: set[str] = set()
    for module in modules:
        parts = module.name.split(".")
        known.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return known


def absolute_from(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` reads, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    # A package's __init__ is its own base for `from . import x`; a plain module's is its parent.
    base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _in_package(dotted: str, package: str) -> bool:
    return dotted == package or dotted.startswith(package + ".")


def package_imports(module: Module, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported package module, line) for every import anywhere in module, even in functions."""
    package = module.name.split(".")[0]
    # ast.walk reaches imports in functions and under `if TYPE_CHECKING:` alike.
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _in_package(alias.name, package):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = absolute_from(module, node)
            if not _in_package(base, package):
                continue
            for alias in node.names:
                # `from inboxsort.cli import doctor` imports the module inboxsort.cli.doctor.
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def layer_violations(package_dir: Path, layers: tuple[Layer, ...] = LAYERS) -> list[str]:
    """Imports that go up a layer or across flows, and modules in no layer."""
    modules = load_modules(package_dir)
    known = known_names(modules)
    rank = {member: (i, layer) for i, layer in enumerate(layers) for member in layer.members}
    package = package_dir.name
    violations = [
        f"{package}.{top} is in no layer: add it to LAYERS in tests/test_architecture.py"
        for top in sorted({m.top for m in modules} - rank.keys())
    ]

    def label(top: str) -> str:
        layer = rank[top][1]
        return top if layer.independent else layer.name

    for module in modules:
        if module.top not in rank:
            continue
        own_rank, own_layer = rank[module.top]
        for target, line in sorted(set(package_imports(module, known)), key=lambda t: (t[1], t[0])):
            at = f"at {module.where}:{line}"
            top = top_of(target)
            if top not in rank:
                violations.append(f"{module.name} → {target} ({package}.{top} is in no layer) {at}")
            elif rank[top][0] < own_rank:
                above = f"layer {label(top)} above layer {label(module.top)}"
                violations.append(f"{module.name} → {target} ({above}) {at}")
            elif rank[top][0] == own_rank and own_layer.independent and top != module.top:
                beside = f"flow {top} beside flow {module.top}: flows are independent"
                violations.append(f"{module.name} → {target} ({beside}) {at}")
    return violations


def missing_layer_members(package_dir: Path, layers: tuple[Layer, ...] = LAYERS) -> list[str]:
    """LAYERS members that name nothing in the package, so a rename cannot leave LAYERS stale."""
    tops = {module.top for module in load_modules(package_dir)}
    return [
        f"LAYERS names {package_dir.name}.{member}, which does not exist: rename or remove it"
        for layer in layers
        for member in layer.members
        if member not in tops
    ]


def _is_private(name: str) -> bool:
    # Dunders (__version__, __init__) are public protocol, not private names.
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_ok(importer: str, owner: str, name: str, known: set[str]) -> bool:
    if importer == owner:
        return True
    # A private submodule (inboxsort.db._impl) is private to its package, not to one module.
    return f"{owner}.{name}" in known and importer.startswith(owner + ".")


def _args(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> Iterator[str]:
    a = node.args
    for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
        if arg is not None:
            yield arg.arg


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """Nodes that run in scope itself: nested scopes are yielded but not entered."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))


# Statements and patterns that bind their `.name` (`except E as name`, `case [*name]`, ...).
_NAMED_BINDERS = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.ExceptHandler,
    ast.MatchAs,
    ast.MatchStar,
)


def _bindings(scope: ast.AST, module: Module) -> dict[str, str | None]:
    """Names bound in scope: the dotted name an import binds, None for any other binding."""
    bound: dict[str, str | None] = {}
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        bound.update(dict.fromkeys(_args(scope)))
    for node in _own_nodes(scope):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    # `import a.b.c` binds `a`, and `a.b.c.x` is read through it.
                    first = alias.name.split(".")[0]
                    bound[first] = first
        elif isinstance(node, ast.ImportFrom):
            base = absolute_from(module, node)
            for alias in node.names:
                if alias.name != "*":
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.setdefault(node.id, None)
        elif isinstance(node, _NAMED_BINDERS) and node.name:
            bound.setdefault(node.name, None)
    return bound


_Scope = tuple[bool, dict[str, str | None]]  # (is a class body, its bindings)


def _resolve(expr: ast.expr, chain: list[_Scope]) -> str | None:
    """The dotted name expr denotes through imports (`sa.orm` -> `sqlalchemy.orm`), or None."""
    if isinstance(expr, ast.Attribute):
        base = _resolve(expr.value, chain)
        return f"{base}.{expr.attr}" if base else None
    if not isinstance(expr, ast.Name):
        return None
    for depth, (is_class, bound) in enumerate(reversed(chain)):
        # A class body's names are not visible from the methods nested in it.
        if is_class and depth > 0:
            continue
        if expr.id in bound:
            return bound[expr.id]
    return None


@functools.cache  # shared by the private-name and SQL checks
def attribute_uses(module: Module) -> tuple[tuple[str, str, int], ...]:
    """(dotted value, attribute, line) for each `x.attr` whose x resolves through an import."""
    found: list[tuple[str, str, int]] = []

    # Scope-aware so that a parameter or local that shadows an imported name is not mistaken
    # for the module (`def f(session): session._x` next to `from inboxsort.db import session`).
    def visit(node: ast.AST, chain: list[_Scope]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _SCOPES):
                scope = (isinstance(child, ast.ClassDef), _bindings(child, module))
                visit(child, [*chain, scope])
                continue
            if isinstance(child, ast.Attribute):
                value = _resolve(child.value, chain)
                if value:
                    found.append((value, child.attr, child.lineno))
            visit(child, chain)

    visit(module.tree, [(False, _bindings(module.tree, module))])
    return tuple(found)


def _imported_paths(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted paths an import statement names: `from a.b import c` -> a.b and a.b.c."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = absolute_from(module, node)
    return [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]


def private_violations(package_dir: Path) -> list[str]:
    """Private names (`_x`) of one package module used by another, by import or attribute."""
    modules = load_modules(package_dir)
    known = known_names(modules)
    package = package_dir.name
    violations = []
    for module in modules:
        uses: list[tuple[str, str, int]] = []
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for path in _imported_paths(module, node):
                parts = path.split(".")
                # Every private segment counts: `from inboxsort.db._impl import x` too.
                uses += [(".".join(parts[:i]), p, node.lineno) for i, p in enumerate(parts) if i]
        uses += [u for u in attribute_uses(module) if u[0] in known]
        for owner, name, line in sorted(set(uses), key=lambda u: (u[2], u[0], u[1])):
            if (
                _in_package(owner, package)
                and _is_private(name)
                and not _private_ok(module.name, owner, name, known)
            ):
                violations.append(
                    f"{module.name} → {owner}.{name} (private to {owner}) at {module.where}:{line}"
                )
    return violations


def _is_sql_module(dotted: str) -> bool:
    # sqlalchemy itself re-exports the builders; .sql holds them; .future and .dialects add
    # their own select/insert.
    prefixes = ("sqlalchemy.sql", "sqlalchemy.dialects", "sqlalchemy.future")
    return dotted == "sqlalchemy" or any(_in_package(dotted, p) for p in prefixes)


def sql_violations(package_dir: Path) -> list[str]:
    """SQL builders of sqlalchemy imported or used outside the package's db/ folder."""
    db = f"{package_dir.name}.db"
    violations = []
    for module in load_modules(package_dir):
        if _in_package(module.name, db):
            continue
        uses = set()
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom) and _is_sql_module(absolute_from(module, node)):
                base = absolute_from(module, node)
                uses |= {(base, a.name, node.lineno) for a in node.names if a.name in SQL_NAMES}
        # `sa.select(...)`, `sqlalchemy.func.count(...)`, `sql.update(...)`.
        uses |= {u for u in attribute_uses(module) if _is_sql_module(u[0]) and u[1] in SQL_NAMES}
        violations += [
            f"{module.name} → {base}.{name} (SQL outside {db}) at {module.where}:{line}"
            for base, name, line in sorted(uses, key=lambda u: (u[2], u[0], u[1]))
        ]
    return violations


def functions(
    tree: ast.AST, prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualname, node) of every function and method, nested ones as `f.<locals>.g`."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            qualname = f"{prefix}{child.name}"
            yield qualname, child
            yield from functions(child, f"{qualname}.<locals>.")
        elif isinstance(child, ast.ClassDef):
            yield from functions(child, f"{prefix}{child.name}.")
        else:
            yield from functions(child, prefix)


@dataclass(frozen=True)
class Oversize:
    """A module or function over its line limit."""

    key: str
    lines: int
    limit: int
    where: str

    def __str__(self) -> str:
        return f'"{self.key}": {self.lines} lines (max {self.limit}) at {self.where}'


def oversized(
    package_dir: Path,
    max_module: int = MAX_MODULE_LINES,
    max_function: int = MAX_FUNCTION_LINES,
) -> list[Oversize]:
    """Modules over max_module lines and functions over max_function lines."""
    found = []
    for module in load_modules(package_dir):
        if module.lines > max_module:
            key = f"{module.name}:<module>"
            found.append(Oversize(key, module.lines, max_module, module.where))
        for qualname, node in functions(module.tree):
            # lineno is the `def` line (decorators excluded), end_lineno the body's last line.
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > max_function:
                where = f"{module.where}:{node.lineno}"
                found.append(Oversize(f"{module.name}:{qualname}", size, max_function, where))
    return found


def size_violations(
    package_dir: Path,
    allowlist: Mapping[str, str] = SIZE_ALLOWLIST,
    max_module: int = MAX_MODULE_LINES,
    max_function: int = MAX_FUNCTION_LINES,
) -> list[str]:
    """Oversized modules and functions not in allowlist, and allowlist entries no longer needed."""
    found = oversized(package_dir, max_module, max_function)
    violations = [str(o) for o in found if o.key not in allowlist]
    # A stale entry would silently let the next growth of that function through.
    keys = {o.key for o in found}
    violations += [
        f'"{key}" is in SIZE_ALLOWLIST but nothing by that name is oversized: remove it'
        for key in allowlist
        if key not in keys
    ]
    return violations
