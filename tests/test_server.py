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

