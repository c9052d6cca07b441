"""The rooms keep to themselves: ``gateway/policy/`` decides without I/O, ``gateway/store/`` knows nothing of HTTP.

Read from the source's import graph (grimp), so a new import anywhere in either package is checked
without an edit here; each rule names the module and the line that broke it.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import grimp
import pytest

# What policy code may import: pure standard library, the pure parsers it builds on, and the typed
# facts it decides from. Nothing that reaches a socket, a file, a thread or a clock of its own.
POLICY_MAY_IMPORT = frozenset(
    {
        "__future__",
        "collections",
        "dataclasses",
        "hashlib",
        "hmac",
        "json",
        "logging",
        "math",
        "re",
        "types",
        "typing",
        "warnings",
        "cachetools",
        "cryptography",
        "jwt",
        "yarl",
        "gateway.config",
        "gateway.errors",
        "gateway.store.models",
    }
)
# Packages of which policy may use one pure part only (grimp names the top-level package of an external import).
POLICY_MAY_IMPORT_PART = {"urllib": "urllib.parse"}
# Known, named debt: the JWKS fetcher still lives in identity.py (a credential source, issue 13 item 3).
POLICY_EXCEPTIONS = frozenset({("gateway.policy.identity", "aiohttp")})
# What the store may never reach, even through another module: HTTP and the rooms that speak it.
STORE_MAY_NOT_REACH = ("routes", "gateway.edge", "gateway.proxy", "gateway.run", "gateway.app")
STORE_MAY_NOT_IMPORT = frozenset({"aiohttp", "ssl", "socket", "http", "urllib", "requests", "httpx"})


@cache
def graph() -> grimp.ImportGraph:
    """The import graph of the gateway and its handlers, standard library and dependencies as leaves."""
    return grimp.build_graph("gateway", "routes", include_external_packages=True)


def modules(package: str) -> list[str]:
    """Every module of ``package``, itself included."""
    return sorted({package, *graph().find_descendants(package)})


def lines(importer: str, imported: str) -> list[str]:
    """Where ``importer`` imports ``imported``, as ``module:line: source``."""
    return [
        f"{importer}:{detail['line_number']}: {detail['line_contents']}"
        for detail in graph().get_import_details(importer=importer, imported=imported)
    ]


def policy_allows(importer: str, imported: str) -> bool:
    """Whether a policy module may import this one directly."""
    if imported.startswith("gateway.policy") or imported in POLICY_MAY_IMPORT:
        return True
    if (importer, imported) in POLICY_EXCEPTIONS:
        return True
    part = POLICY_MAY_IMPORT_PART.get(imported)
    return part is not None and all(f" {part} " in f" {line} " for line in lines(importer, imported))


@pytest.mark.parametrize("module", modules("gateway.policy"))
def test_policy_imports_no_io(module: str) -> None:
    """Policy decides from typed facts, synchronously: no aiohttp, asyncio, sockets, files or the store backend."""
    refused = [
        line
        for imported in sorted(graph().find_modules_directly_imported_by(module))
        if not policy_allows(module, imported)
        for line in lines(module, imported)
    ]
    assert refused == []


def test_policy_exceptions_are_still_needed() -> None:
    """A debt paid off leaves the list, so the exception cannot come back unnoticed."""
    for importer, imported in POLICY_EXCEPTIONS:
        assert lines(importer, imported), f"{importer} no longer imports {imported}: remove the exception"


@pytest.mark.parametrize("module", modules("gateway.store"))
def test_store_imports_no_http(module: str) -> None:
    """The store (protocol, models and every backend) speaks no HTTP: any backend serves CLI and server alike."""
    imported = graph().find_modules_directly_imported_by(module)
    assert [line for name in sorted(imported & STORE_MAY_NOT_IMPORT) for line in lines(module, name)] == []


@pytest.mark.parametrize("room", STORE_MAY_NOT_REACH)
def test_store_never_reaches_the_http_rooms(room: str) -> None:
    """Not even through another module: the store imports nothing that imports a handler or the edge."""
    assert graph().find_shortest_chains(importer="gateway.store", imported=room, as_packages=True) == set()


def test_policy_never_reaches_the_store_backend() -> None:
    """Policy sees the store's models, never a backend (which would bring its I/O and a loop back)."""
    assert graph().find_shortest_chains(importer="gateway.policy", imported="gateway.store.sqlite") == set()


def test_the_store_does_not_import_visibility() -> None:
    """No store ↔ visibility loop: the filter the store applies is a store model that policy builds."""
    assert graph().find_shortest_chains(importer="gateway.store", imported="gateway.policy.visibility") == set()


def test_sqlite_stays_inside_its_backend() -> None:
    """Handlers, CLI, importer and demo reach the data only through the Store protocol; ``open_store`` alone
    names the SQLite backend."""
    backend = set(modules("gateway.store.sqlite"))
    outside = [name for name in (*modules("gateway"), *modules("routes")) if name not in backend]
    assert [line for name in outside for line in lines(name, "sqlite3")] == []
    importers = {name for module in backend for name in graph().find_modules_that_directly_import(module)}
    assert sorted(importers - backend) == ["gateway.store.protocol"]


ENVIRONMENT = frozenset({"environ", "environb", "getenv", "getenvb"})
ROOT = Path(__file__).resolve().parents[1]


def environment_reads(path: Path) -> list[int]:
    """The lines where a source file reads the process's environment: ``os.environ`` (but as the target of an
    assignment: a value written for a library that reads it), ``os.getenv``, or either imported from os."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    written = {
        id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
    }
    reads = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ENVIRONMENT
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and id(node) not in written
    ]
    imported = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module == "os"
        and {alias.name for alias in node.names} & ENVIRONMENT
    ]
    return sorted(reads + imported)


def test_nothing_outside_the_config_loader_reads_the_environment() -> None:
    """DESIGN's rule: every setting comes through gateway/config.py, so the environment is read there only;
    the other modules are handed what they need (the metrics their workers' folder, by the run layer)."""
    sources = sorted(path for package in ("gateway", "routes") for path in (ROOT / package).rglob("*.py"))
    reads = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sources
        if path != ROOT / "gateway" / "config.py"
        for line in environment_reads(path)
    ]
    assert reads == []


def test_the_environment_check_sees_each_way_of_reading_it(tmp_path: Path) -> None:
    """The check above finds a read written any of the usual ways, and lets a write through."""
    source = tmp_path / "module.py"
    source.write_text(
        "import os\nfrom os import getenv\na = os.environ.get('A')\nb = os.environ['B']\nc = os.getenv('C')\n"
        "os.environ['D'] = 'written for a library'\n"
    )
    assert environment_reads(source) == [2, 3, 4, 5]
