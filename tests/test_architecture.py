"""The code's shape: no module reaches into another module's (or package's) private names.

A ``_name`` is private to the module that defines it. When another module
needs it, the defining module is missing a public method; reaching in would
tie the two together where no reader looks. This reads every module of
botkit and checks each ``obj._name`` against the names the module itself
defines, and each ``from botkit... import _name``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "botkit"
# botkit/_compat.py is where another package's private names are allowed, fenced.
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "_compat.py")
# Public API with an underscore so as not to clash with field names (namedtuple's).
DOCUMENTED = frozenset({"_replace", "_asdict", "_fields", "_make"})


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def defined_names(tree: ast.Module) -> set[str]:
    """Every private name the module defines: functions, classes, attributes, slots."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
            names.add(node.target.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return {n for n in names if private(n)}


def is_module(root: Path, package: str, name: str) -> bool:
    """True when ``from package import name`` imports a module (private modules are fine)."""
    where = root.joinpath(*package.split("."), name)
    return where.with_suffix(".py").exists() or where.is_dir()


def foreign_private_uses(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """``file:line`` of each private name of another module that ``path`` uses."""
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(root)
    own = defined_names(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if node.attr in own or node.attr in DOCUMENTED:
                continue
            if isinstance(base, ast.Name) and base.id == "sys" and node.attr == "_getframe":
                continue  # a documented CPython function, used to name a definition's line
            found.append(f"{where}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            ours = module.split(".")[0] == "botkit"
            if not ours and any(private(part) for part in module.split(".")):
                found.append(f"{where}:{node.lineno} from {module}")
            for alias in node.names:
                if private(alias.name) and not (ours and is_module(root, module, alias.name)):
                    found.append(f"{where}:{node.lineno} from {module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != "botkit" and any(private(part) for part in parts):
                    found.append(f"{where}:{node.lineno} import {alias.name}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_module_reads_or_writes_another_modules_private_names(path: Path) -> None:
    assert foreign_private_uses(path) == []


def test_the_check_finds_a_foreign_private_name(tmp_path: Path) -> None:
    module = tmp_path / "botkit" / "example.py"
    module.parent.mkdir()
    module.write_text(
        "from botkit._turn import _NO_VALUES\n"
        "class Mine:\n"
        "    def __init__(self):\n"
        "        self._own = 1\n"
        "def use(ctx, mine):\n"
        "    return ctx._values, mine._own\n"
    )
    assert foreign_private_uses(module, tmp_path) == [
        "botkit/example.py:1 from botkit._turn import _NO_VALUES",
        "botkit/example.py:6 ._values",
    ]


TESTS = Path(__file__).resolve().parent


def private_botkit_imports(path: Path, root: Path = TESTS.parent) -> list[str]:
    """``file:line module`` of each private botkit module (``botkit.x._y``) ``path`` imports."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "botkit" and any(private(part) for part in parts[1:]):
                found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
                break
    return found


@pytest.mark.parametrize(
    "path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS.parent))
)
def test_tests_import_botkit_only_through_its_public_modules(path: Path) -> None:
    # A test is a user of botkit: what it needs, a user or an operator needs
    # too, so it is exported from a public module (botkit, botkit.storage,
    # botkit.delivery, botkit.service, botkit.devtools, ...), never reached in
    # botkit.x._y, where a refactoring would break the test and no user.
    assert private_botkit_imports(path) == []


def test_the_check_finds_a_private_botkit_import(tmp_path: Path) -> None:
    test = tmp_path / "tests" / "test_example.py"
    test.parent.mkdir()
    test.write_text(
        "from botkit import Bot\n"
        "from botkit.delivery import OutboxWorker\n"
        "from botkit._runtime import Runtime\n"
        "def test_it():\n"
        "    from botkit.service._app import FEATURES\n"
        "    import botkit.storage._x\n"
        "    from botkit import _metrics\n"
    )
    assert private_botkit_imports(test, tmp_path) == [
        "tests/test_example.py:3 botkit._runtime",
        "tests/test_example.py:5 botkit.service._app",
        "tests/test_example.py:6 botkit.storage._x",
        "tests/test_example.py:7 botkit._metrics",
    ]


def test_no_import_circle_remains() -> None:
    # Layers (pyproject's import-linter contract, run by lint-imports in CI) keep
    # imports one way between layers; this also covers modules within one layer.
    # TYPE_CHECKING and function-local imports count.
    graph = grimp.build_graph("botkit")
    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported.startswith("botkit.") and imported != module:
                back = graph.find_shortest_chain(importer=imported, imported=module)
                if back is not None:
                    circles.append(" -> ".join((module, *back)))
    assert circles == []


def test_every_module_has_a_place_in_the_layers() -> None:
    # The layers contract is not exhaustive (a package's __init__ gathers its
    # tier), so a new module left out of it would be checked by nothing.
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    [contract] = config["tool"]["importlinter"]["contracts"]
    named = {
        name.strip() for layer in contract["layers"] for name in layer.replace("|", ":").split(":")
    }
    containers = {"botkit", "botkit.delivery", "botkit.devino", "botkit.plugins"}
    unplaced = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        if module in containers:
            continue
        if not any(module == n or module.startswith(n + ".") for n in named):
            unplaced.append(module)
    assert sorted(unplaced) == []


def test_the_readme_lists_the_public_api_one_line_each() -> None:
    import botkit

    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## The public API", 1)[1].split("\n## ", 1)[0]
    listed = [line.split("`")[1] for line in section.splitlines() if line.startswith("- `")]
    assert listed == list(botkit.__all__)


def test_each_class_is_defined_once() -> None:
    # Two enums or models of one name (two Outcome, two MediaType) read as one
    # thing and are not; a private helper class may repeat another module's name.
    where: dict[str, list[str]] = {}
    for path in MODULES:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not private(node.name):
                where.setdefault(node.name, []).append(str(path.relative_to(PACKAGE.parent)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


def test_backoff_is_computed_only_by_the_retry_policy() -> None:
    # One retry policy (botkit/_retry.py): a module that doubles a delay or
    # draws a jitter of its own has grown a second one. The emulator stands in
    # for the provider, whose own callback schedule it copies.
    allowed = {PACKAGE / "_retry.py", PACKAGE / "devtools" / "emulator.py"}
    found = []
    for path in MODULES:
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            doubling = (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Pow)
                and isinstance(node.left, ast.Constant)
                and node.left.value in (2, 2.0)
            )
            jitter = (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
                and node.attr in ("uniform", "random")
            )
            if doubling or jitter:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []
