"""The app's temporary folders: named after the process that owns them, removed when it ends.

A folder is removed at normal exit (atexit) and on SIGTERM (`exit_on_sigterm` turns it into a normal
exit). A process killed outright (SIGKILL, a power cut) cannot clean up, so the next start removes the
folders of this app whose owning process is gone (`remove_stale`).
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

PREFIX = "notagen-"
_OWNED = re.compile(rf"^{PREFIX}[a-z]+-(\d+)-")


def make_temp_dir(kind: str) -> Path:
    """A new folder `notagen-<kind>-<pid>-XXXX` in the system temp folder, removed when this process exits."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def remove_stale(parent: str | Path | None = None) -> list[Path]:
    """Remove this app's temp folders whose owning process no longer runs; returns what was removed."""
    removed = []
    root = Path(parent or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _OWNED.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _running(int(match.group(1))):
            if entry.stat().st_uid == os.getuid():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def exit_on_sigterm() -> None:
    """Make SIGTERM a normal exit (SystemExit in the main thread), so atexit cleanup runs."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
