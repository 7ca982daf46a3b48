"""A management-plane stand-in, run as its own process by the status-push tests.

``python push_receiver.py MODE LOG``: listens on a free loopback port, prints it on stdout,
then answers ``POST /push``. MODE ``ok`` answers 204 and appends each JSON body, with the
Authorization header it came with, as one line to the file LOG; ``error`` answers 500; ``hang``
reads the request and never answers.
"""

from __future__ import annotations

import json
import sys
import threading
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
        if MODE == "error":
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        entry = {"auth": self.headers.get("authorization"), "document": json.loads(body)}
        with _lock, open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
