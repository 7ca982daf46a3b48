"""Binary HTTP cost for a typical chat request, against JSON handling of the same body.

Run: python3 bench/bench_bhttp.py [--repeat N]. Prints microseconds per request and the ratio
to json.dumps + json.loads of the request body; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable

from enclave.protocol.bhttp import (
    Request,
    RequestDecoder,
    decode_request,
    encode_request,
)


def chat_body() -> dict[str, object]:
    """An OpenAI-style chat request whose JSON is about 2 KB."""
    turns = [
        {"role": "system", "content": "You are a careful assistant. Answer briefly and cite."},
    ]
    for i in range(6):
        turns.append({"role": "user", "content": f"Question {i}: " + "tell me more " * 12})
        turns.append({"role": "assistant", "content": f"Answer {i}: " + "here is more " * 8})
    return {
        "model": "llama-3.1-8b-instruct",
        "messages": turns,
        "max_tokens": 512,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def chat_request(content: bytes) -> Request:
    return Request(
        method=b"POST",
        scheme=b"https",
        authority=b"enclave.example",
        path=b"/v1/chat/completions",
        headers=(
            (b"authorization", b"Bearer sk-" + b"x" * 48),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream"),
            (b"user-agent", b"OpenAI/Python 1.52.0"),
            (b"date", b"Tue, 15 Oct 2024 12:00:00 GMT"),
            (b"x-request-id", b"6c7d3a0e-1f7b-4d0e-9c55-2b7f0f1c9a41"),
            (b"accept-encoding", b"identity"),
            (b"content-length", str(len(content)).encode()),
        ),
        content=content,
    )


def per_call_us(
    function: Callable[[], object], baseline: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Best time per call of ``function`` and of ``baseline``, measured alternately so that
    a noisy shared machine slows both alike."""
    number = 1000
    best = best_baseline = float("inf")
    for _ in range(repeat):
        best = min(best, timeit.timeit(function, number=number))
        best_baseline = min(best_baseline, timeit.timeit(baseline, number=number))
    return best / number * 1e6, best_baseline / number * 1e6


def incremental_decode(encoded: bytes, piece: int) -> None:
    decoder = RequestDecoder()
    for start in range(0, len(encoded), piece):
        decoder.feed(encoded[start : start + piece])
    decoder.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="timing repeats (best is kept)")
    args = parser.parse_args()

    body = chat_body()
    content = json.dumps(body).encode()
    request = chat_request(content)

    def baseline() -> object:
        return json.loads(json.dumps(body))

    print(f"body {len(content)} bytes, {len(request.headers)} headers; ratio is to")
    print("json.dumps + json.loads of the body, timed alternately with each row")

    for form, indeterminate in (("known-length", False), ("indeterminate-length", True)):
        encoded = encode_request(request, indeterminate=indeterminate)
        rows = [
            ("encode", lambda ind=indeterminate: encode_request(request, indeterminate=ind)),
            ("decode", lambda enc=encoded: decode_request(enc)),
            (
                "encode + decode",
                lambda ind=indeterminate: decode_request(
                    encode_request(request, indeterminate=ind)
                ),
            ),
            (
                "incremental decode, 256-byte pieces",
                lambda enc=encoded: incremental_decode(enc, 256),
            ),
        ]
        print(f"-- {form} ({len(encoded)} bytes)")
        for label, function in rows:
            us, json_us = per_call_us(function, baseline, args.repeat)
            print(f"{label:40s} {us:7.1f} us (json {json_us:5.1f} us)  {us / json_us:5.2f}x")


if __name__ == "__main__":
    main()
