"""Start the composing app: `python app.py [--host H] [--port P] ...` (see --help)."""
from __future__ import annotations

import argparse
import hmac
import os
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from engine.device import DEVICES, WEIGHTS, app_threads

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network at run time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="NotaGen Composer: a browser app for composing classical sheet music.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but 127.0.0.1 exposes the app to the network")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--share", action="store_true",
                        help="also publish the app through a public Gradio share link (needs internet)")
    parser.add_argument("--notagen-checkpoint", metavar="PATH",
                        help="NotaGen weights: an official .pth (NotaGen-small/medium/large/X) or a saved model "
                             "folder; default: the shipped model in assets/notagen/ when present")
    parser.add_argument("--measure-checkpoint", metavar="DIR",
                        help="measure-model folder (model.safetensors + config.json) for inpainting; "
                             "default: the shipped model in assets/measure/ when present")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where NotaGen runs: auto is the CUDA GPU when there is one")
    parser.add_argument("--weights", choices=WEIGHTS, default="auto",
                        help="NotaGen's number format: auto is bf16 on CUDA and fp32 on the CPU; "
                             "int8 or bf16 decode faster on the CPU, fp16 is for CUDA")
    parser.add_argument("--threads", type=int, default=app_threads(),
                        help="CPU threads for the models (default: every core but one, at most 8, so the browser "
                             "and the engraving beside them do not slow them down)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", default=os.environ.get("NOTAGEN_AUTH"),
                        help="require this login (or set NOTAGEN_AUTH, which keeps it out of the process list)")
    parser.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted")
    parser.add_argument("--max-request-mb", type=float, default=48,
                        help="largest request body other than an upload (an action's JSON, a restored session: "
                             "twice its 20 MiB of MusicXML, as JSON escapes it, and room for its locks); larger "
                             "ones are refused with 413 before they are read")
    parser.add_argument("--import-time-limit", type=float, default=30, metavar="SECONDS",
                        help="longest an upload or a restored session may take to read before it is stopped")
    parser.add_argument("--import-memory-mb", type=int, default=1024, metavar="MB",
                        help="most memory the process reading an upload or a restored session may use")
    parser.add_argument("--render-time-limit", type=float, default=120, metavar="SECONDS",
                        help="longest an engraving, audio render or export may take before it is stopped")
    parser.add_argument("--render-memory-mb", type=int, default=1024, metavar="MB",
                        help="most memory the process engraving, rendering audio or writing an export may use")
    parser.add_argument("--render-workers", type=int, default=2, metavar="N",
                        help="engravings that run at once (and, apart, audio renders and exports), each in its own "
                             "worker with the whole render time and memory limit, so one slow score holds up only one")
    parser.add_argument("--max-login-failures", type=int, default=10,
                        help="with --auth: failed logins allowed per minute; after that every login waits")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="how many model, audio and PDF actions run at once, all sessions together (the rest wait in the queue)")
    parser.add_argument("--max-queue", type=int, default=64, help="longest queue before new requests are refused")
    return parser.parse_args(argv)


class LoginGuard:
    """Gradio's `auth` check with a rate limit: after `max_failures` failed logins within `window_s`, every
    login (even a right one) is refused until the window has passed, so passwords cannot be guessed fast.

    Gradio gives the check no client address, so the limit is for all clients together."""

    def __init__(self, user: str, password: str, max_failures: int = 10, window_s: float = 60.0) -> None:
        self._user, self._password = user.encode(), password.encode()
        self.max_failures, self.window_s = max_failures, window_s
        self._failures: deque[float] = deque()
        self._lock = threading.Lock()

    def __call__(self, user: str, password: str) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._failures and now - self._failures[0] > self.window_s:
                self._failures.popleft()
            if len(self._failures) >= self.max_failures:
                return False
            right = hmac.compare_digest(user.encode(), self._user) & hmac.compare_digest(password.encode(), self._password)
            if not right:
                self._failures.append(now)
            return right


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    auth = None
    if args.auth:
        user, _, password = args.auth.partition(":")
        if not user or not password:
            print("error: --auth takes USER:PASSWORD", file=sys.stderr)
            return 2
        auth = LoginGuard(user, password, args.max_login_failures)
    if args.max_request_mb <= 0:
        print("error: --max-request-mb must be above 0", file=sys.stderr)
        return 2
    if args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1") or args.share:
        print(f"warning: the app will be reachable from other machines ({args.host}"
              f"{', share link' if args.share else ''}); anyone who reaches it can use it", file=sys.stderr)
    from engine.tempdirs import exit_on_sigterm, make_temp_dir, remove_stale

    exit_on_sigterm()  # a stopped server removes its temp folders as at a normal exit
    remove_stale()
    # Gradio serves any file under its upload folder: make it this server's own, not the shared /tmp/gradio
    os.environ["GRADIO_TEMP_DIR"] = str(make_temp_dir("gradio"))
    from starlette.middleware import Middleware

    from engine.errors import ModelError
    from engine.score.sandbox import ImportBudget, RenderBudget
    from engine.service import SHIPPED, Composer
    from webui.app import CSS, build_app
    from webui.server_limits import BodyLimit

    try:
        budget = ImportBudget(args.import_time_limit, args.import_memory_mb)
        render_budget = RenderBudget(args.render_time_limit, args.render_memory_mb, args.render_workers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    notes: list[str] = []
    try:
        composer = Composer.from_checkpoints(args.notagen_checkpoint or SHIPPED, args.measure_checkpoint or SHIPPED,
                                             notes=notes, import_budget=budget,
                                             render_budget=render_budget, device=args.device, weights=args.weights)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    composer.warm_up()
    for note in notes:
        print(f"note: {note} (see --help)", file=sys.stderr)
    demo = build_app(composer)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        css=CSS,
        max_file_size=f"{args.max_upload_mb}mb",
        allowed_paths=[str(composer.output_dir)],
        blocked_paths=[str(Path(tempfile.gettempdir()) / "gradio")],  # the shared default upload folder
        app_kwargs={"middleware": [Middleware(BodyLimit, max_bytes=int(args.max_request_mb * 2**20))]},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
