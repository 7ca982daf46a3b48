"""The cost of the relay hop, side by side with nginx. Prints figures and ratios; asserts nothing.

One run compares, on the same machine and the same development engine:

- ``engine``: clients straight to the engine's Unix socket (no hop);
- ``nginx``: Debian's nginx as a TLS relay to that engine (``proxy_buffering off``, one
  worker, an ECDSA P-256 certificate, keep-alive to the engine), started here on loopback
  with its own configuration in a temporary directory and stopped after;
- ``plain@T`` and ``ohttp@T``: this service (``enclave serve``, simulated TEE) from source tree
  ``T``, over RA-TLS in plaintext and with chunked OHTTP (X-Wing, AES-256-GCM). Several trees
  may be given (``--tree base=/tmp/base --tree new=.``) to compare a baseline and a change in
  one run; each service supervises its own engine.

For each engine pace (unpaced, and paced per stream as vLLM is) and each concurrency, each hop
runs the same fixed workload (N concurrent streams of T tokens), repeated ``--reps`` times in
rotating order. The load generator is its own process (``relay_loadgen.py``); connections are
opened and warmed before the measured window. Figures per hop (medians over the repetitions):

- service CPU per streamed token: utime+stime from ``/proc`` of the hop's processes (the
  service and its descendants except the engine; nginx's master and worker) over the window,
  divided by the tokens the clients received;
- engine CPU per token (the same for every hop if the hop costs the engine nothing);
- tokens/s (all streams together) and time to first token p50/p99 over the streams;
- ratios: CPU to nginx's, throughput to the engine's, TTFT added over the engine's p50, and
  OHTTP throughput to plaintext of the same tree.

Run: python3 bench/bench_relay.py                # everything, about 6 minutes on 2 cores
     python3 bench/bench_relay.py --streams 64 --paces 40 --reps 1 --hops nginx,plain,ohttp
     python3 bench/bench_relay.py --workers 1,2      # one and two data-plane workers side by side
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = "bench-relay-load-token-7e2c9a0f4b1d"
NGINX = "/usr/sbin/nginx"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- /proc ---------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime in seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def _is_engine(pid: int) -> bool:
    """Whether the process is the development engine or one of its workers (the program's
    module, not its arguments: the service's own command line names the engine command too)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(word.startswith(b"enclave_dev.engine") for word in argv[:3])


def process_tree() -> dict[int, tuple[int, float]]:
    tree = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            tree[int(entry)] = stat
    return tree


def cpu_seconds(root: int, *, exclude_engine: bool) -> tuple[float, float]:
    """(CPU of ``root`` and its descendants minus any engine subtree, CPU of engine subtrees)."""
    tree = process_tree()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in tree.items():
        children.setdefault(ppid, []).append(pid)
    own = engine = 0.0
    stack = [(root, False)]
    while stack:
        pid, in_engine = stack.pop()
        if pid not in tree:
            continue
        in_engine = in_engine or (exclude_engine and _is_engine(pid))
        if in_engine:
            engine += tree[pid][1]
        else:
            own += tree[pid][1]
        stack.extend((child, in_engine) for child in children.get(pid, ()))
    return own, engine


# -- the parts -----------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    tree: Path
    port: int
    process: subprocess.Popen[bytes]
    run_dir: Path

    @property
    def engine_socket(self) -> Path:
        return self.run_dir / "engine.sock"


def start_service(
    name: str,
    tree: Path,
    tmp: Path,
    models: Path,
    workers: int = 1,
    launcher: tuple[str, ...] = (sys.executable,),
) -> Service:
    """``enclave serve`` from ``tree``; ``launcher`` runs it (e.g. python -m cProfile -o F)."""
    port = free_port()
    home = tmp / f"svc-{name}"
    engine = (
        f"{sys.executable} -m enclave_dev.engine --dev-load-seconds 0.1 --dev-tokens-per-second 0"
    )
    command = [
        *launcher, "-m", "enclave", "serve", "--tee", "simulated",
        "--insecure-allow-simulated-tee", "--host", "127.0.0.1", "--port", str(port),
        "--models-dir", str(models), "--state-dir", str(home / "state"),
        "--run-dir", str(home / "run"), "--roothash-dir", str(home / "rh"),
        "--engine-command", engine, "--max-concurrent-streams", "1024",
    ]  # fmt: skip
    if "--data-plane-workers" in (tree / "enclave" / "cli" / "_serve.py").read_text():
        command += ["--data-plane-workers", str(workers)]  # else the default: cores - 1
    elif workers != 1:
        raise SystemExit(f"tree {tree} has no data-plane workers")
    if "--insecure-dev-engine" in (tree / "enclave" / "cli" / "_serve.py").read_text():
        command.append("--insecure-dev-engine")  # trees from before it was required lack it
    env = {
        **os.environ,
        "LOAD_TOKEN": TOKEN,
        "PYTHONPATH": str(tree),
        "ENCLAVE_INSECURE_DEV_ENGINE": "1",  # older trees ignore it
        # Every stream of the bench comes from 127.0.0.1: lift the per-address cap.
        "ENCLAVE_MAX_CONNECTIONS_PER_ADDRESS": "2048",
    }
    log = (tmp / f"svc-{name}.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=tree, stdout=log, stderr=log)
    return Service(name, tree, port, process, home / "run")


def wait_ready(service: Service) -> None:
    with httpx.Client(base_url=f"https://127.0.0.1:{service.port}", verify=False) as client:
        deadline = time.monotonic() + 120
        while True:
            if service.process.poll() is not None:
                raise RuntimeError(f"service {service.name} exited; see its log")
            try:
                client.get("/health")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        client.post(
            "/v1/models/load", json={"model": "tiny"}, headers={"Authorization": f"Bearer {TOKEN}"}
        ).raise_for_status()
        while client.get("/v1/models/status").json()["proxy_status"] != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError(f"service {service.name}: the model did not become ready")
            time.sleep(0.2)


def set_pace(service: Service, pace: float) -> None:
    transport = httpx.HTTPTransport(uds=str(service.engine_socket))
    with httpx.Client(transport=transport, base_url="http://engine") as client:
        client.post("/dev/faults", json={"tokens_per_second": pace}).raise_for_status()


def write_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


NGINX_CONF = """\
worker_processes 1;
user root;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream engine {{ server unix:{socket}; keepalive 1024; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        keepalive_requests 100000;
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def start_nginx(tmp: Path, engine_socket: Path) -> tuple[subprocess.Popen[bytes], int]:
    directory = tmp / "nginx"
    directory.mkdir()
    cert, key = write_certificate(directory)
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(dir=directory, socket=engine_socket, port=port, cert=cert, key=key)
    )
    process = subprocess.Popen(
        [NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not start; see {directory / 'error.log'}")
        time.sleep(0.05)


def find_engine_pid(service: Service) -> int:
    for pid, (ppid, _) in process_tree().items():
        if ppid == service.process.pid and _is_engine(pid):
            return pid
    raise RuntimeError(f"no engine process under service {service.name}")


# -- the load generator --------------------------------------------------------------------------


class LoadGenerator:
    def __init__(self, hops: dict[str, dict[str, Any]]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "relay_loadgen.py"), "--hops", json.dumps(hops)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator died")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        with_timeout_kill(self.process, lambda: self.ask({"cmd": "quit"}))


def with_timeout_kill(process: subprocess.Popen[bytes], polite: Any) -> None:
    try:
        polite()
        process.wait(timeout=10)
    except Exception:
        process.kill()
        process.wait()


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Sample:
    cpu: float  # hop CPU seconds per token
    engine_cpu: float
    rate: float  # tokens/s
    ttft50: float  # seconds
    ttft99: float
    failed: int


@dataclass
class Target:
    name: str
    cpu_root: int | None  # the hop's process (None: no hop)
    engine_pid: int
    ohttp_of: str | None = None  # the plaintext hop of the same tree
    samples: dict[tuple[float, int], list[Sample]] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(gen: LoadGenerator, target: Target, streams: int, tokens: int) -> Sample:
    gen.ask({"cmd": "warm", "hop": target.name, "streams": streams})
    before = cpu_seconds(target.cpu_root, exclude_engine=True) if target.cpu_root else (0.0, 0.0)
    engine_before = cpu_seconds(target.engine_pid, exclude_engine=False)[0]
    answer = gen.ask({"cmd": "run", "hop": target.name, "streams": streams, "tokens": tokens})
    after = cpu_seconds(target.cpu_root, exclude_engine=True) if target.cpu_root else (0.0, 0.0)
    engine_after = cpu_seconds(target.engine_pid, exclude_engine=False)[0]
    count = max(answer["tokens"], 1)
    return Sample(
        cpu=(after[0] - before[0]) / count,
        engine_cpu=(engine_after - engine_before) / count,
        rate=answer["tokens"] / answer["wall"],
        ttft50=percentile(answer["ttft"], 0.5),
        ttft99=percentile(answer["ttft"], 0.99),
        failed=answer["failed"],
    )


def median_sample(samples: list[Sample]) -> Sample:
    def med(name: str) -> float:
        return statistics.median(getattr(s, name) for s in samples)

    return Sample(
        med("cpu"), med("engine_cpu"), med("rate"), med("ttft50"), med("ttft99"),
        sum(s.failed for s in samples),
    )  # fmt: skip


def report(targets: list[Target], pace: float, streams: int, tokens: int) -> None:
    key = (pace, streams)
    got = {t.name: median_sample(t.samples[key]) for t in targets if t.samples.get(key)}
    pace_text = "unpaced" if pace == 0 else f"paced {pace:g} tokens/s per stream"
    print(f"\n-- {streams} streams x {tokens} tokens, engine {pace_text}")
    print(
        f"   {'hop':<14}{'CPU/token':>10}{'x nginx':>9}{'engine CPU':>11}{'tokens/s':>10}"
        f"{'x engine':>9}{'TTFT p50':>10}{'p99':>9}{'added p50':>10}{'failed':>7}"
    )
    nginx, engine = got.get("nginx"), got.get("engine")
    for target in targets:
        s = got.get(target.name)
        if s is None:
            continue
        cpu = f"{s.cpu * 1e6:8.1f}us" if target.cpu_root else f"{'-':>10}"
        relative = nginx is not None and nginx.cpu > 0 and target.cpu_root is not None
        vs_nginx = f"{s.cpu / nginx.cpu:8.2f}x" if relative and nginx else f"{'':>9}"
        vs_engine = f"{s.rate / engine.rate:8.2f}x" if engine else f"{'':>9}"
        added = f"{(s.ttft50 - engine.ttft50) * 1e3:+8.1f}ms" if engine else f"{'':>10}"
        print(
            f"   {target.name:<14}{cpu}{vs_nginx}{s.engine_cpu * 1e6:9.1f}us{s.rate:10.0f}"
            f"{vs_engine}{s.ttft50 * 1e3:8.1f}ms{s.ttft99 * 1e3:7.1f}ms{added}{s.failed:7d}"
        )
    for target in targets:
        if target.ohttp_of and target.name in got and target.ohttp_of in got:
            ratio = got[target.name].rate / got[target.ohttp_of].rate
            print(f"   {target.name}: throughput {ratio:.2f}x {target.ohttp_of} (goal >= 0.90)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="64,256", help="concurrency levels (default 64,256)")
    parser.add_argument("--paces", default="0,40", help="engine pace per stream; 0 = unpaced")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per stream (default 256)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median; default 3)")
    parser.add_argument(
        "--hops", default="engine,nginx,plain,ohttp", help="subset of engine,nginx,plain,ohttp"
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a source tree of the service to measure (repeatable; default: this one)",
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="data-plane worker counts to run each tree with, side by side (e.g. 1,2; "
        "CPU/token then counts the owner and every worker)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    hops = set(args.hops.split(","))
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("svc", str(ROOT))]
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text("{}")
    services: list[Service] = []
    nginx: subprocess.Popen[bytes] | None = None
    gen: LoadGenerator | None = None
    try:
        counts = [int(w) for w in args.workers.split(",")]
        for name, path in trees:
            for workers in counts:
                label = name if len(counts) == 1 else f"{name}w{workers}"
                services.append(
                    start_service(label, Path(path).resolve(), tmp, tmp / "models", workers)
                )
        for service in services:
            wait_ready(service)
        first = services[0]
        engine_pid = find_engine_pid(first)
        spec: dict[str, dict[str, Any]] = {}
        targets: list[Target] = []
        if "engine" in hops:
            spec["engine"] = {"kind": "unix", "address": str(first.engine_socket), "ohttp": False}
            targets.append(Target("engine", None, engine_pid))
        if "nginx" in hops:
            nginx, nginx_port = start_nginx(tmp, first.engine_socket)
            spec["nginx"] = {"kind": "tls", "address": ["127.0.0.1", nginx_port], "ohttp": False}
            targets.append(Target("nginx", nginx.pid, engine_pid))
        for service in services:
            own_engine = find_engine_pid(service)
            suffix = f"@{service.name}" if len(services) > 1 else ""
            address = ["127.0.0.1", service.port]
            if "plain" in hops:
                spec[f"plain{suffix}"] = {"kind": "tls", "address": address, "ohttp": False}
                targets.append(Target(f"plain{suffix}", service.process.pid, own_engine))
            if "ohttp" in hops:
                spec[f"ohttp{suffix}"] = {"kind": "tls", "address": address, "ohttp": True}
                plain = f"plain{suffix}" if "plain" in hops else None
                targets.append(Target(f"ohttp{suffix}", service.process.pid, own_engine, plain))
        gen = LoadGenerator(spec)
        levels = [int(s) for s in args.streams.split(",")]
        paces = [float(p) for p in args.paces.split(",")]
        print(
            f"bench_relay: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
            f"medians of {args.reps} repetitions; CPU/token = the hop's utime+stime per token"
        )
        for pace in paces:
            for service in services:
                set_pace(service, pace)
            for streams in levels:
                for rep in range(args.reps):
                    shift = rep % len(targets)
                    for target in targets[shift:] + targets[:shift]:
                        sample = measure(gen, target, streams, args.tokens)
                        target.samples.setdefault((pace, streams), []).append(sample)
                report(targets, pace, streams, args.tokens)
                sys.stdout.flush()
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    finally:
        if gen is not None:
            gen.close()
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        for service in services:
            service.process.terminate()
        for service in services:
            try:
                service.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
