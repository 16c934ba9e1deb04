"""The layers keep to their seams (``docs/ARCHITECTURE.md``), checked on the source itself.

- Above the storage layer nothing asks for a storage class by name: optional
  features are capabilities (``driver.local_files``, ``namespace.immediate``,
  ...), never ``isinstance`` on a driver or on the storage registry, and
  ``close``/``ping`` are on the Protocols rather than found with ``getattr``.
- aiohttp is used through its public modules only.
- The code cites documents of the repository, not files outside it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "cargohold"
REPOSITORY = SRC.parent.parent

#: The aiohttp modules with a documented, public API.
PUBLIC_AIOHTTP = {"aiohttp", "aiohttp.web", "aiohttp.abc"}


def modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def storage_classes() -> set[str]:
    return {
        node.name
        for path, tree in modules()
        if "storage" in path.relative_to(SRC).parts
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


def names_in(node: ast.expr) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def test_nothing_above_storage_checks_a_storage_class() -> None:
    concrete = storage_classes()
    assert {"FilesystemDriver", "StorageRegistry", "InMemoryDriver", "S3Driver"} <= concrete
    found = []
    for path, tree in modules():
        if "storage" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                checked = names_in(node.args[1]) & concrete
                if checked:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {sorted(checked)}")
    assert found == []


def test_close_and_ping_are_never_looked_up_with_getattr() -> None:
    found = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in ("close", "ping")
            ):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []


def test_aiohttp_is_used_through_its_public_modules() -> None:
    found = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("aiohttp")
            ):
                imported = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
                if node.module not in PUBLIC_AIOHTTP or imported & {"aiohttp.web_protocol"}:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("aiohttp") and alias.name not in PUBLIC_AIOHTTP:
                        found.append(f"{path.relative_to(SRC)}:{node.lineno} {alias.name}")
    assert found == []


def test_no_site_or_private_server_of_aiohttp_is_subclassed() -> None:
    found = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = (
                    set().union(*(names_in(base) for base in node.bases)) if node.bases else set()
                )
                if bases & {"SockSite", "BaseSite", "TCPSite", "RequestHandler"}:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert found == []


def test_the_code_cites_the_repository_s_own_documents() -> None:
    assert (REPOSITORY / "docs" / "ARCHITECTURE.md").is_file()
    citing = [
        str(path.relative_to(REPOSITORY))
        for folder in ("src", "tests", "bench")
        for path in sorted((REPOSITORY / folder).rglob("*.py"))
        if "DESIGN" + ".md" in path.read_text()
    ]
    assert citing == []
