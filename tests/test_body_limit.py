"""The server's cap on request bodies (`--max-request-mb`, `webui.server_limits.BodyLimit`), through a real
`python app.py`: a body over it gets 413 before Gradio reads it, with or without a Content-Length, and
costs the server no more than the cap in memory; a restore, an upload larger than the cap and the page's
events still work."""
from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from bench.load import server_pid
from tests.conftest import NOTAGEN_REFERENCE, running_app
from tests.test_bounded_input import musicxml

CAP_MB = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(URL, process id) of an app whose request bodies may be at most 2 MiB."""
    model = NOTAGEN_REFERENCE / "tiny_notagen_trained_fp16.pth"
    if not model.exists():
        pytest.skip(f"{model} is not here")
    log = tmp_path_factory.mktemp("body-limit") / "app.log"
    with running_app("--max-request-mb", str(CAP_MB), "--notagen-checkpoint", str(model), log_path=log) as url:
        yield url, server_pid()


def post(url: str, size: int, chunked: bool) -> tuple[bytes, int, float]:
    """POST `size` bytes to the event route, declared (Content-Length) or chunked: (the answer, the bytes the
    server let in before it closed, seconds until the answer was complete)."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    header = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    sock.sendall(f"POST /gradio_api/queue/join HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 f"Content-Type: application/json\r\n{header}\r\n\r\n".encode())
    answer, done = bytearray(), threading.Event()
    started = time.monotonic()

    def read() -> None:
        try:
            while data := sock.recv(65536):
                answer.extend(data)
        except OSError:
            pass
        done.set()

    threading.Thread(target=read, daemon=True).start()
    chunk, sent = b"x" * 2**20, 0
    try:
        while sent < size and not done.is_set():
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
    except OSError:  # the server closed the connection: what it refused is not read
        pass
    done.wait(60)
    elapsed = time.monotonic() - started
    sock.close()
    return bytes(answer), sent, elapsed


def peak_kib(pid: int) -> int:
    """The server process's peak resident memory (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_refused_at_once_without_its_memory(server, chunked):
    url, pid = server
    before = peak_kib(pid)
    answer, sent, elapsed = post(url, 300 * 2**20, chunked)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert f"larger than the server's limit of {CAP_MB} MiB (--max-request-mb)".encode() in answer
    assert elapsed < 10 and sent < 100 * 2**20  # cut off, not read to the end
    assert peak_kib(pid) - before < 50 * 1024  # the server never held the 300 MiB


def test_restore_and_an_upload_larger_than_the_cap_still_work(server, tmp_path):
    from gradio_client import Client, handle_file

    url, _ = server
    client = Client(url, verbose=False, download_files=False)
    saved = next(o for o in client.predict("Bach - Chorale BWV 66.6", api_name="/open_example")
                 if isinstance(o, dict) and "versions" in o)
    restored = Client(url, verbose=False, download_files=False).predict(saved, api_name="/restore")
    assert any(isinstance(o, str) and "4 parts, 10 measures (restored)" in o for o in restored)
    big = tmp_path / "padded.musicxml"  # uploads have their own cap (--max-upload-mb), not this one
    big.write_text(musicxml(2).replace("<part-list>", f"<!-- {'x' * (3 * 2**20)} --><part-list>"))
    opened = client.predict(handle_file(str(big)), api_name="/open_upload")
    assert any(isinstance(o, str) and "**padded**: 1 parts, 2 measures" in o for o in opened)
