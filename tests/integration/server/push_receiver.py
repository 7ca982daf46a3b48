"""A management-plane stand-in, run as its own process by the status-push tests.

``python push_receiver.py MODE LOG``: listens on a free loopback port, prints it on stdout,
then answers ``POST /push``. MODE ``ok`` answers 204 and appends each JSON body, with the
Authorization header it came with, as one line to the file LOG; ``error`` answers 500; ``hang``
reads the request and never answers; ``trickle`` answers 200 and then one byte of its body
every 0.5 s for 10 minutes; ``huge`` answers 200 with a 400 MiB body, as fast as it is read.
``trickle`` and ``huge`` log each request as it arrives.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE, LOG = sys.argv[1], sys.argv[2]
_lock = threading.Lock()
_never = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if MODE == "hang":
            _never.wait()
            return
        if MODE in ("trickle", "huge"):
            self._log(body)
            getattr(self, f"_{MODE}")()
            return
        if MODE == "error":
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self._log(body)
        self.send_response(204)
        self.end_headers()

    def _log(self, body: bytes) -> None:
        entry = {
            "auth": self.headers.get("authorization"),
            "document": json.loads(body),
            "at": time.monotonic(),
        }
        with _lock, open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "1200")
        self.end_headers()
        try:
            for _ in range(1200):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            return

    def _huge(self) -> None:
        size, piece = 400 << 20, b"x" * (1 << 20)
        self.send_response(200)
        self.send_header("content-length", str(size))
        self.end_headers()
        try:
            for _ in range(size // len(piece)):
                self.wfile.write(piece)
        except OSError:
            return

    def log_message(self, format: str, *args: object) -> None:
        return None


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
