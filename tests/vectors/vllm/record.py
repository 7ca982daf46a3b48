"""Record real vLLM responses into this directory (see README.md here).

    python3 tests/vectors/vllm/record.py SOCKET MODEL_NAME

SOCKET is the Unix socket of a running ``vllm serve`` (started as README.md says). Every
request is greedy (temperature 0) with few tokens; each response is written as received:
``<name>.json`` for a JSON body, ``<name>.sse`` for a stream (raw bytes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
MESSAGES = [{"role": "user", "content": "Say hello."}]
PROMPT = "The quick brown fox"


def requests(model: str) -> list[tuple[str, str, str, dict[str, object] | None]]:
    chat = {"model": model, "messages": MESSAGES, "max_tokens": 5, "temperature": 0}
    completion = {"model": model, "prompt": PROMPT, "max_tokens": 5, "temperature": 0}
    usage = {"stream_options": {"include_usage": True}}
    return [
        ("models", "GET", "/v1/models", None),
        ("version", "GET", "/version", None),
        ("chat", "POST", "/v1/chat/completions", chat),
        ("chat-stream", "POST", "/v1/chat/completions", {**chat, "stream": True}),
        ("chat-stream-usage", "POST", "/v1/chat/completions", {**chat, "stream": True, **usage}),
        ("completion", "POST", "/v1/completions", completion),
        ("completion-stream", "POST", "/v1/completions", {**completion, "stream": True}),
        (
            "completion-stream-usage",
            "POST",
            "/v1/completions",
            {**completion, "stream": True, **usage},
        ),
        ("error-unknown-model", "POST", "/v1/completions", {**completion, "model": "nope"}),
        ("error-too-long", "POST", "/v1/completions", {**completion, "max_tokens": 100000}),
    ]


def main(socket: str, model: str) -> None:
    transport = httpx.HTTPTransport(uds=socket)
    with httpx.Client(transport=transport, base_url="http://localhost", timeout=60) as http:
        for name, method, path, body in requests(model):
            with http.stream(method, path, json=body) as response:
                raw = response.read()
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            if streamed:
                (HERE / f"{name}.sse").write_bytes(raw)
            else:
                document = {"status": response.status_code, "body": json.loads(raw)}
                (HERE / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
            print(name, response.status_code)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
