"""The folders of src/lifecycle show the layers, and imports run one way.

Entry points (cli, web, daemon) may import anything; services import the domain, the
store, the projections and the support helpers; projections import the store and the
domain; the store imports the domain; the domain (aggregates, pure rules, policy) imports
only itself, and no database, scheduler, web framework or logger.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "lifecycle"

LAYER_OF_PACKAGE = {
    "aggregates": "domain", "domain": "domain", "policy": "domain",
    "support": "support",
    "store": "store",
    "projections": "projections",
    "services": "services",
    "cli": "entry", "web": "entry", "daemon": "entry", "__main__": "entry", "__init__": "root",
}

MAY_IMPORT = {
    "root": set(),
    "domain": {"domain", "root"},
    "support": {"support", "root"},
    "store": {"store", "domain", "support", "root"},
    "projections": {"projections", "store", "domain", "support", "root"},
    "services": {"services", "projections", "store", "domain", "support", "root"},
    "entry": {"entry", "services", "projections", "store", "domain", "support", "root"},
}

INFRASTRUCTURE = ("sqlalchemy", "eventsourcing.sqlite", "eventsourcing.postgres", "sqlite3",
                  "psycopg", "apscheduler", "fastapi", "starlette", "uvicorn", "logging",
                  "structlog", "click", "httpx")


def module_name(path: Path, source: Path = SOURCE) -> str:
    parts = list(path.relative_to(source.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, source: Path = SOURCE) -> set[str]:
    """Every module a file imports, by absolute name (relative imports resolved)."""
    name = module_name(path, source)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return LAYER_OF_PACKAGE[parts[1] if len(parts) > 1 else "__init__"]


def lifecycle_module_names() -> set[str]:
    return {module_name(path) for path in SOURCE.rglob("*.py")}


MODULES = sorted(SOURCE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_each_module_imports_only_its_own_layer_or_the_layers_below(path: Path) -> None:
    """A module imports lifecycle modules only from its own layer or a layer its layer may use."""
    known = lifecycle_module_names()
    assert path.relative_to(SOURCE).parts[0].removesuffix(".py") in LAYER_OF_PACKAGE, (
        f"{path.relative_to(SOURCE)} is in no layer: put it in a package by layer")
    own = layer(module_name(path))
    wrong = sorted(
        target for target in imports_of(path)
        if target in known and layer(target) not in MAY_IMPORT[own])
    assert not wrong, f"{module_name(path)} ({own}) imports {wrong}"


@pytest.mark.parametrize("path", [p for p in MODULES if layer(module_name(p)) == "domain"],
                         ids=lambda p: str(p.relative_to(SOURCE)))
def test_the_domain_imports_no_infrastructure(path: Path) -> None:
    """Aggregates, pure rules and the policy model import no database, scheduler, web or logger."""
    infrastructure = sorted(
        target for target in imports_of(path)
        if any(target == lib or target.startswith(lib + ".") for lib in INFRASTRUCTURE))
    assert not infrastructure, f"{module_name(path)} imports {infrastructure}"


def test_the_checker_sees_a_wrong_way_import(tmp_path: Path) -> None:
    """The import reader resolves absolute and relative imports, so a domain module importing a
    service or the store is reported."""
    fake = tmp_path / "lifecycle"
    (fake / "domain").mkdir(parents=True)
    probe = fake / "domain" / "probe.py"
    probe.write_text("from ..services import ingest\nfrom lifecycle.store.vault import KeyVault\n")
    found = imports_of(probe, fake)
    assert {"lifecycle.services.ingest", "lifecycle.store.vault"} <= found
    wrong = {t for t in found if t.startswith("lifecycle.") and t.count(".") == 2
             and layer(t) not in MAY_IMPORT[layer(module_name(probe, fake))]}
    assert wrong == {"lifecycle.services.ingest", "lifecycle.store.vault"}
