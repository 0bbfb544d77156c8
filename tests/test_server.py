"""The server over HTTP: it serves only its own outputs, and a login when asked for one."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, running_app


def status_of(url: str, data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("path", [
    "gradio_api/file=/etc/passwd",
    "gradio_api/file=%2Fetc%2Fpasswd",
    "gradio_api/file=../../../../etc/passwd",
    f"gradio_api/file={ROOT}/app.py",
    "file=/etc/passwd",
])
def test_files_outside_the_outputs_are_refused(app_url, path):
    assert status_of(app_url + path) in (403, 404)


def test_login_is_required_with_auth(tmp_path):
    with running_app("--auth", "composer:secret-words", log_path=tmp_path / "app.log") as url:
        assert status_of(url + "config") == 401
        form = b"username=composer&password=wrong"
        assert status_of(url + "login", data=form) in (400, 401)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        opener.open(urllib.request.Request(url + "login", data=b"username=composer&password=secret-words"), timeout=30)
        with opener.open(url + "config", timeout=30) as response:
            assert "components" in json.loads(response.read())


def test_bad_auth_value_is_refused():
    result = subprocess.run([sys.executable, "app.py", "--auth", "nopassword"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "USER:PASSWORD" in result.stderr



def test_stopped_server_leaves_no_temp_folders_and_serves_no_shared_gradio_files(tmp_path, monkeypatch):
    """Gradio serves what is under its upload folder: the server has its own (not the shared /tmp/gradio,
    which is blocked), and SIGTERM removes it with the output folder."""
    import tempfile
    from pathlib import Path

    shared = Path(tempfile.gettempdir()) / "gradio" / "other-app"
    shared.mkdir(parents=True, exist_ok=True)
    (shared / "secret.txt").write_text("another app's upload")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with running_app(log_path=tmp_path / "app.log") as url:
        owned = sorted(p.name.split("-")[1] for p in (tmp_path / "tmp").iterdir())
        assert owned == ["app", "gradio"]
        assert status_of(url + f"gradio_api/file={shared / 'secret.txt'}") in (403, 404)
    assert not list((tmp_path / "tmp").iterdir())


def test_failed_logins_are_rate_limited(monkeypatch):
    from app import LoginGuard

    clock = [1000.0]
    monkeypatch.setattr("app.time.monotonic", lambda: clock[0])
    guard = LoginGuard("composer", "secret-words", max_failures=3, window_s=60)
    assert guard("composer", "secret-words")
    assert not any(guard("composer", f"guess {i}") for i in range(3))
    assert not guard("composer", "secret-words")  # locked for the rest of the window, even the right password
    clock[0] += 61
    assert guard("composer", "secret-words")
