"""Shared test fixtures: where the reference data lives.

`shared/` (reference fixtures, corpora) sits beside the repository in CI and on the team's machines.
A user who cloned only the repository does not have it: tests that need it are skipped there, but in
CI (CI=true) a missing `shared/` is an error, so a check can never silently disappear.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
NOTAGEN_REFERENCE = SHARED_DIR / "fixtures" / "notagen_reference"


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"CI needs {path} (the shared/ folder beside the repository)")
        pytest.skip(f"{path} is not here (shared/ is not beside this clone)")
    return path


@pytest.fixture(scope="session")
def notagen_reference() -> Path:
    """The folder of outputs of the official NotaGen and CLaMP 2 code."""
    return _require(NOTAGEN_REFERENCE)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED_DIR)
