"""TEST FIXTURE, not a key broker: a stand-in for the CoCo confidential-data-hub resource API
(``GET /cdh/resource/<repo>/<type>/<tag>``) in front of a Trustee KBS with a resource policy.

In a real deployment each CVM has its own CDH on 127.0.0.1:8006; the CDH attests the guest to
the KBS (RCAR handshake, the TDX quote as evidence) and the KBS evaluates its Rego resource
policy over the verified claims before releasing the resource. Over loopback this stand-in
cannot see any evidence, so it *simulates* the guest instead: it listens on one port per
simulated guest, each port bound to a configured measurement (an MRTD as hex), and releases
the resource only on ports whose measurement is in its policy. A replica pointed at port ``i``
(``ohttp_key_cdh_url``) therefore "is" guest ``i``. Nothing here checks real evidence.

Usage: ``python kbs_standin.py CONFIG.json``; CONFIG is::

    {"resource_path": "default/enclave-ohttp/keys", "resource_file": "/path/keys.json",
     "policy": {"mr_td": ["<hex>", ...]}, "guests": ["<hex>", ...], "log": "/path/log.jsonl"}

The resource file is read on every request (a test rewrites it to rotate keys). The ports,
one per guest, are printed on stdout as one JSON list. Each request is appended to the log as
``{"guest": i, "path": ..., "released": bool}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

_PREFIX = "/cdh/resource/"


def _response(status: int, body: bytes, content_type: str) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Error"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class StandIn:
    def __init__(self, config: dict[str, Any]) -> None:
        self.resource_path = config["resource_path"]
        self.resource_file = Path(config["resource_file"])
        self.allowed = {value.lower() for value in config["policy"]["mr_td"]}
        self.guests = [value.lower() for value in config["guests"]]
        self.log = Path(config["log"])

    def answer(self, guest: int, method: str, path: str) -> tuple[int, bytes, str]:
        if method != "GET":
            return 405, b"method not allowed", "text/plain"
        if not path.startswith(_PREFIX) or path[len(_PREFIX) :] != self.resource_path:
            return 404, b"resource not found", "text/plain"
        released = self.guests[guest] in self.allowed
        with self.log.open("a") as log:
            log.write(json.dumps({"guest": guest, "path": path, "released": released}) + "\n")
        if not released:  # what the CDH reports when the KBS policy denies the resource
            return 500, b"get resource failed: KBS resource policy denied the request", "text/plain"
        return 200, self.resource_file.read_bytes(), "application/octet-stream"

    async def serve_guest(self, guest: int) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                status, body, content_type = self.answer(guest, method, path)
                writer.write(_response(status, body, content_type))
                await writer.drain()
            except (asyncio.IncompleteReadError, ValueError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(server.sockets[0].getsockname()[1])


async def main(config_path: str) -> None:
    stand_in = StandIn(json.loads(Path(config_path).read_text()))
    ports = [await stand_in.serve_guest(index) for index in range(len(stand_in.guests))]
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
