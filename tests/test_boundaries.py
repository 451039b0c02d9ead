"""ARCHITECTURE.md "Boundaries", checked by scanning every import."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

# folder -> markctl subpackages it must never import
FORBIDDEN = {
    "layouts": ("drivers", "simulator"),
    "simulator": ("drivers",),
    "drivers": ("simulator",),
}
# Nothing below markctl's linked folders may reach back into the controller's service layers.
CONTROLLER_ONLY = ("markctl.jobs", "markctl.records", "markctl.api", "markctl.cli")


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_folder_respects_boundaries(repo: Path, folder: str) -> None:
    bad = []
    for path in sorted((repo / folder).rglob("*.py")):
        for line, module in _imports(path):
            for other in FORBIDDEN[folder]:
                if module in (other, f"markctl.{other}") or module.startswith(
                    (f"{other}.", f"markctl.{other}.")
                ):
                    bad.append(f"{path.relative_to(repo)}:{line} imports {module}")
            if module.startswith(CONTROLLER_ONLY):
                bad.append(f"{path.relative_to(repo)}:{line} imports controller module {module}")
            if module.split(".")[0] in ("drivers", "layouts", "simulator", "firmware_profiles"):
                bad.append(f"{path.relative_to(repo)}:{line} uses the bare name {module}")
    assert not bad, "\n".join(bad)


def test_scanner_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import os\nfrom markctl.drivers.grbl import codec\n")
    assert ("markctl.drivers.grbl") in [m for _, m in _imports(sample)]


def test_no_asyncio_wait_for_in_the_package(repo: Path) -> None:
    # On Python 3.11, asyncio.wait_for swallows a cancellation that arrives in the same loop turn as
    # the inner result: an abort racing a machine's answer was lost and the job ran to its end.
    # asyncio.timeout() has no such race.
    bad = []
    for folder in ("markctl", "drivers", "simulator", "layouts"):
        for path in sorted((repo / folder).rglob("*.py")):
            if path.is_relative_to(repo / "markctl") and path.parent.is_symlink():
                continue
            tree = ast.parse(path.read_text("utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr == "wait_for":
                    if isinstance(node.value, ast.Name) and node.value.id == "asyncio":
                        bad.append(f"{path.relative_to(repo)}:{node.lineno}")
    assert not bad, "use asyncio.timeout() instead of asyncio.wait_for: " + ", ".join(bad)
