"""The user's top-level folders import as markctl.*, from the tree and from a built wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

LINKED = ("drivers", "layouts", "simulator", "firmware_profiles")


@pytest.mark.parametrize("name", LINKED)
def test_link_is_relative_and_resolves(repo: Path, name: str) -> None:
    link = repo / "markctl" / name
    assert link.is_symlink(), f"markctl/{name} must be a committed symlink (git config core.symlinks?)"
    assert os.readlink(link) == f"../{name}"
    assert link.resolve() == (repo / name).resolve()
    assert (link / "__init__.py").is_file()


@pytest.mark.parametrize("name", ("drivers", "layouts", "simulator", "firmware_profiles"))
def test_bare_import_is_refused(repo: Path, name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {name}"], cwd=repo, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert f"import this package as 'markctl.{name}'" in result.stderr


def test_namespaced_import_is_one_module() -> None:
    import markctl.drivers
    import markctl.drivers.transports

    assert sys.modules["markctl.drivers"] is markctl.drivers
    assert "drivers" not in sys.modules


@pytest.mark.slow
def test_wheel_contains_every_subpackage_and_profile(repo: Path, tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("markctl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in _package_inits(repo):
        assert expected in names, f"{expected} missing from the wheel"
    for toml in (repo / "firmware_profiles").glob("*.toml"):
        assert f"markctl/firmware_profiles/{toml.name}" in names
    assert "markctl/firmware_profiles/schema.json" in names
    assert "markctl/py.typed" in names


def _package_inits(repo: Path) -> list[str]:
    """Every markctl package's __init__.py, walking through the linked folders."""
    found = []
    for root, dirs, files in os.walk(repo / "markctl", followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if "__init__.py" in files:
            found.append(str(Path(root).relative_to(repo) / "__init__.py"))
    assert len(found) > len(LINKED)
    return found
