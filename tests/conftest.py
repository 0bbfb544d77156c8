"""Shared test fixtures: where the reference data lives.

`shared/` (reference fixtures, corpora) sits beside the repository in CI and on the team's machines.
A user who cloned only the repository does not have it: tests that need it are skipped there, but in
CI (CI=true) a missing `shared/` is an error, so a check can never silently disappear.
"""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and the test machine is shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED_DIR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(*args: str, log_path: Path):
    """`python app.py ARGS` on a free port; yields its URL once it answers, stops it afterwards."""
    port = _free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.time() + 120
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the app exited with {process.returncode}; see {log_path}")
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except urllib.error.HTTPError:
                    break  # it answers (e.g. a login page)
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("the app did not start within 120 s")
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The app, started once for the whole test session, composing with the fixtures' tiny NotaGen."""
    model = NOTAGEN_REFERENCE / "tiny_notagen_trained_fp16.pth"  # small, official format, known output
    args = ("--notagen-checkpoint", str(_require(model)))
    with running_app(*args, log_path=tmp_path_factory.mktemp("app") / "app.log") as url:
        yield url
