"""Start the composing app: `python app.py [--host H] [--port P] ...` (see --help)."""
from __future__ import annotations

import argparse
import os
import sys

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
    parser.add_argument("--auth", metavar="USER:PASSWORD", default=os.environ.get("NOTAGEN_AUTH"),
                        help="require this login (or set NOTAGEN_AUTH, which keeps it out of the process list)")
    parser.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="how many model, audio and PDF actions run at once, all sessions together (the rest wait in the queue)")
    parser.add_argument("--max-queue", type=int, default=64, help="longest queue before new requests are refused")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    auth = None
    if args.auth:
        user, _, password = args.auth.partition(":")
        if not user or not password:
            print("error: --auth takes USER:PASSWORD", file=sys.stderr)
            return 2
        auth = (user, password)
    if args.host not in ("127.0.0.1", "localhost", "::1") or args.share:
        print(f"warning: the app will be reachable from other machines ({args.host}"
              f"{', share link' if args.share else ''}); anyone who reaches it can use it", file=sys.stderr)
    from engine.errors import ModelError
    from engine.service import SHIPPED, Composer
    from webui.app import CSS, build_app

    notes: list[str] = []
    try:
        composer = Composer.from_checkpoints(args.notagen_checkpoint or SHIPPED, args.measure_checkpoint or SHIPPED,
                                             notes=notes)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
