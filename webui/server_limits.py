"""A cap on the size of every request body the server reads, enforced before Gradio reads it.

Gradio limits uploads (`max_file_size`, checked as the upload streams to disk) but not the JSON body of an
event: a restored session (`/gradio_api/queue/join`) is read and parsed whole before the app can refuse it,
so a huge body cost the server its size in memory. `BodyLimit` is plain ASGI: it counts the body as it
streams in, so a request that lies about or leaves out its Content-Length (chunked) is cut off too, and
refuses with 413 as soon as the count passes the cap.
"""
from __future__ import annotations

from gradio.route_utils import API_PREFIX

UPLOAD_PATH = API_PREFIX + "/upload"
"""Gradio's upload route, which streams files to disk under its own `max_file_size`."""


class BodyLimit:
    """ASGI middleware: HTTP request bodies (uploads excepted) of at most `max_bytes`, else 413.

    The body is read here before the app sees any of it, so a refused body never reaches Gradio: its
    chunks are dropped at once (an exception raised into Gradio's body reader kept them alive in reference
    cycles until the garbage collector ran, about a cap's worth of memory per refused request)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] == UPLOAD_PATH:
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)  # before a byte of the body is read
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                chunks.clear()
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False
        chunks.clear()

        async def replay():
            """The body in one message, then the client's own messages (a disconnect)."""
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        message = (f"the request body is larger than the server's limit of {self.max_bytes / 2**20:g} MiB "
                   "(--max-request-mb)\n").encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(message)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": message})
