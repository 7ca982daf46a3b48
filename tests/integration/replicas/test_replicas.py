"""Three replicas behind one untrusted TCP load balancer and the project's relay (issue 22
item 3), each a real ``enclave serve`` (simulated TEE on one simulated platform, development
engine), with one real redis-server as the shared replay set and the CDH/KBS stand-in as the
key broker; a fourth replica whose measurements are not in the release policy.

- the three get the same key document from the stand-in and serve byte-identical key
  configurations; the fourth is refused by the stand-in, holds no key, refuses OHTTP with
  ``ohttp_key_unavailable`` (503) and still answers /health over RA-TLS;
- 300 OHTTP requests through relay -> load balancer land on all three (each answer names its
  replica), encapsulated to the one configuration the client verified;
- an ``enc`` accepted by one replica is refused by the others (Redis);
- RA-TLS clients verify whichever replica each new connection reaches (one policy pinning
  measurements; three different certificates and keys), and refuse the fourth;
- ``enclave models`` acts on all three and reports per replica;
- a rotation at the broker (next, then current, then the old one removed) reaches every
  replica, with both keys accepted during the overlap;
- Redis gone: OHTTP is refused (503 ``replay_store_unavailable``), never accepted unchecked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from attestation.collateral import Collateral
from attestation.policy import Policy, pinned_policy, policy_to_toml
from enclave.client import (
    AsyncOhttpTransport,
    AsyncRaTlsTransport,
    AttestationFailed,
    GatewayRefused,
    Verifier,
)
from enclave.keybroker import KeyGeneration, derive_generation_keys
from enclave.protocol import bhttp
from enclave.protocol.ohttp import KeyConfig, decode_key_configs, encapsulate_request
from enclave_dev.tee import SimulatedMeasurements
from tests.integration.replicas._kbs import RESOURCE, StandIn, generation, kbs_standin
from tests.integration.replicas._redis import RedisServer, free_port, redis_server
from tests.integration.server.test_serve_process import DEV_ENGINE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
LAUNCHER = Path(__file__).with_name("replica_launcher.py")
LOAD_TOKEN = secrets.token_hex(32)
WAIT = 60.0
ALLOWED_MRTD = SimulatedMeasurements().mrtd.hex()
OTHER_MRTD = "5e" * 48  # the fourth replica's: not in the release policy
INSECURE = frozenset({"insecure_allow_simulated_tee", "insecure_dev_engine"})
TRUSTED = 3  # replicas behind the load balancer


class RoundRobin:
    """An untrusted TCP load balancer: each new connection to the next backend, bytes piped
    both ways unread (TLS passes through it)."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self.chosen: Counter[int] = Counter()
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._started.set()
        self._loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.backends[self._next % len(self.backends)]
        self._next += 1
        self.chosen[backend] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Fleet:
    tmp: Path
    ports: list[int]
    lb: RoundRobin
    relay_url: str
    redis: RedisServer
    kbs: StandIn
    generations: list[KeyGeneration]
    logs: list[Path] = field(default_factory=list)

    @property
    def lb_url(self) -> str:
        return f"https://127.0.0.1:{self.lb.port}"

    def url(self, index: int) -> str:
        return f"https://127.0.0.1:{self.ports[index]}"

    def plain(self, index: int) -> httpx.Client:
        return httpx.Client(base_url=self.url(index), verify=False, timeout=30)

    def verifier(self, policy: Policy | None = None) -> Verifier:
        return Verifier(
            FileCollateral(self.tmp / "platform" / "collateral.json"),
            policy=policy or fleet_policy(),
            insecure_root_ca_der=(self.tmp / "platform" / "root_ca.der").read_bytes(),
        )


class FileCollateral:
    def __init__(self, path: Path) -> None:
        self._collateral = Collateral.from_json(path.read_text())

    async def get_collateral(self, quote: bytes) -> Collateral:
        return self._collateral


def fleet_policy() -> Policy:
    pinned = pinned_policy(SimulatedMeasurements().registers())
    return dataclasses.replace(pinned, insecure_accept_service=INSECURE)


def replica_argv(tmp: Path, index: int, port: int, kbs: StandIn, redis: RedisServer) -> list[str]:
    home = tmp / f"replica-{index}"
    return [
        "--host", "127.0.0.1", "--port", str(port),
        "--models-dir", str(tmp / "models"), "--roothash-dir", str(home / "roothash"),
        "--state-dir", str(home / "state"), "--run-dir", str(home / "run"),
        "--engine-command", " ".join([*DEV_ENGINE, "--dev-load-seconds", "0.1"]),
        "--insecure-dev-engine", "--shutdown-grace", "5",
        "--tee", "simulated", "--insecure-allow-simulated-tee",
        "--replica-id", f"replica-{index}",
        "--replay-store", redis.url,
        "--ohttp-key-source", "cdh", "--ohttp-key-cdh-url", kbs.url(index),
        "--ohttp-key-resource", RESOURCE, "--ohttp-key-refresh", "1",
    ]  # fmt: skip


def wait_until(predicate: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code in (200, 503)
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("replicas")
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text("{}")
    generations = [generation((1, 2), "current")]
    guests = [ALLOWED_MRTD] * TRUSTED + [OTHER_MRTD]
    with (
        redis_server(tmp / "redis") as redis,
        kbs_standin(tmp / "kbs", guests, [ALLOWED_MRTD], generations) as kbs,
    ):
        ports = [free_port() for _ in guests]
        replicas = [
            {
                "argv": replica_argv(tmp, index, port, kbs, redis),
                # Idle connections outlive the relay's pooled ones (httpx keeps them 5 s, the
                # service's default is also 5 s: a request on a connection closed at that
                # instant fails), and a loaded CI machine may answer slowly.
                "env": {
                    "LOAD_TOKEN": LOAD_TOKEN,
                    "ENCLAVE_KEEP_ALIVE_TIMEOUT_SECONDS": "30",
                    "ENCLAVE_REPLAY_STORE_TIMEOUT_SECONDS": "10",
                    # One process per replica whatever the machine's cores (workers are
                    # tested on their own).
                    "ENCLAVE_DATA_PLANE_WORKERS": "1",
                },
                "log": str(tmp / f"replica-{index}.log"),
                "mrtd": OTHER_MRTD if index == TRUSTED else None,
            }
            for index, port in enumerate(ports)
        ]
        (tmp / "launcher.json").write_text(
            json.dumps({"bundle_dir": str(tmp / "platform"), "replicas": replicas})
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
        launcher = subprocess.Popen(
            [sys.executable, str(LAUNCHER), str(tmp / "launcher.json")],
            stdout=subprocess.PIPE, text=True, env={**env, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        lb = RoundRobin(ports[:TRUSTED])
        relay_port = free_port()
        relay_log = (tmp / "relay.log").open("w")
        relay = subprocess.Popen(
            [
                sys.executable, "-m", "enclave", "relay",
                "--gateway", f"https://127.0.0.1:{lb.port}/.well-known/ohttp-gateway",
                "--listen", f"127.0.0.1:{relay_port}", "--insecure-skip-gateway-tls-verify",
            ],
            stdout=relay_log, stderr=subprocess.STDOUT,
            env={**env, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        logs = [tmp / f"replica-{index}.log" for index in range(len(ports))]
        running = Fleet(
            tmp, ports, lb, f"http://127.0.0.1:{relay_port}/.well-known/ohttp-relay",
            redis, kbs, generations, logs,
        )  # fmt: skip
        try:
            assert launcher.stdout is not None
            json.loads(launcher.stdout.readline())
            for index in range(len(ports)):
                with running.plain(index) as client:
                    wait_until(
                        lambda c=client: answers(c, "/health"), f"replica {index} up", 2 * WAIT
                    )
            with httpx.Client(timeout=5) as plain:
                wait_until(
                    lambda: answers_relay(plain, f"http://127.0.0.1:{relay_port}"), "relay up"
                )
            yield running
        except BaseException:
            for log in logs:
                if log.exists():
                    sys.stderr.write(f"--- {log.name}\n{log.read_text()[-3000:]}\n")
            raise
        finally:
            relay.terminate()
            relay.wait(timeout=30)
            relay_log.close()
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
            if launcher.stdout is not None:
                launcher.stdout.close()
            lb.close()


def dump_logs(fleet: Fleet) -> None:
    for log in [fleet.tmp / "relay.log", *fleet.logs]:
        if log.exists():
            sys.stderr.write(f"--- {log.name}\n{log.read_text()[-4000:]}\n")


def answers_relay(client: httpx.Client, base: str) -> bool:
    try:
        client.get(base + "/")
        return True
    except httpx.TransportError:
        return False


def key_configs(fleet: Fleet, index: int) -> tuple[int, bytes]:
    with fleet.plain(index) as client:
        response = client.get("/.well-known/ohttp-keys")
    return response.status_code, response.content


def expected_configs(generation: KeyGeneration) -> list[KeyConfig]:
    return [key.config for key in derive_generation_keys(generation)]


def sealed_status_request(config: KeyConfig) -> bytes:
    request = bhttp.Request(
        b"GET", b"https", b"enclave.test", b"/v1/models/status",
        headers=((b"date", formatdate(time.time(), usegmt=True).encode()),),
    )  # fmt: skip
    body, _ = encapsulate_request(config, bhttp.encode_request(request))
    return body


def post_gateway(fleet: Fleet, index: int, body: bytes) -> httpx.Response:
    with fleet.plain(index) as client:
        return client.post(
            "/.well-known/ohttp-gateway",
            content=body,
            headers={"content-type": "message/ohttp-req"},
        )


def test_the_replicas_share_one_key_configuration_the_fourth_gets_none(fleet: Fleet) -> None:
    wanted = expected_configs(fleet.generations[0])
    for index in range(TRUSTED):
        wait_until(lambda i=index: key_configs(fleet, i)[0] == 200, f"replica {index} has keys")
    served = {key_configs(fleet, index)[1] for index in range(TRUSTED)}
    assert len(served) == 1
    assert list(decode_key_configs(served.pop())) == wanted
    # The fourth: refused by the broker; no key; OHTTP refused with the clear error, while
    # its RA-TLS listener still answers /health (and says why it is not ready).
    status, body = key_configs(fleet, TRUSTED)
    assert status == 503
    assert json.loads(body)["error"]["code"] == "ohttp_key_unavailable"
    refused = post_gateway(fleet, TRUSTED, sealed_status_request(wanted[0]))
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "ohttp_key_unavailable"
    with fleet.plain(TRUSTED) as client:
        assert client.get("/health").status_code == 200
        # With its model loaded it is still not ready: no key (a balancer's health check
        # takes it out).
        loaded = client.post(
            "/v1/models/load",
            json={"model": "tiny"},
            headers={"Authorization": f"Bearer {LOAD_TOKEN}"},
        )
        assert loaded.status_code == 202, loaded.text
        wait_until(
            lambda: client.get("/v1/models/status").json()["proxy_status"] == "ready", "loaded"
        )
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "reason": "ohttp_key_unavailable"}
    assert "ohttp_key_unavailable" in fleet.logs[TRUSTED].read_text()
    released = {(r["guest"], r["released"]) for r in fleet.kbs.requests()}
    assert {(i, True) for i in range(TRUSTED)} <= released
    assert (TRUSTED, False) in released
    assert (TRUSTED, True) not in released
    for log in fleet.logs:
        assert base64_seed(fleet) not in log.read_text()  # the key material is never logged


def base64_seed(fleet: Fleet) -> str:
    import base64

    return base64.b64encode(fleet.generations[0].seed).decode()


def test_ra_tls_verifies_whichever_replica_a_connection_reaches(fleet: Fleet) -> None:
    async def check() -> Counter[str]:
        seen: Counter[str] = Counter()
        verifier = fleet.verifier()
        for _ in range(2 * TRUSTED):
            # A fresh client (a fresh connection) each time: the balancer picks a replica.
            transport = AsyncRaTlsTransport(verifier)
            async with httpx.AsyncClient(transport=transport, base_url=fleet.lb_url) as client:
                response = await client.get("/v1/models/status")
                assert response.status_code == 200
                seen[response.json()["replica_id"]] += 1
        return seen

    seen = asyncio.run(check())
    assert set(seen) == {f"replica-{i}" for i in range(TRUSTED)}

    async def fourth() -> None:
        transport = AsyncRaTlsTransport(fleet.verifier())
        async with httpx.AsyncClient(transport=transport, base_url=fleet.url(TRUSTED)) as client:
            await client.get("/health")

    with pytest.raises(AttestationFailed):
        asyncio.run(fourth())  # its MRTD is not pinned


def test_300_ohttp_requests_through_the_relay_land_on_all_three(fleet: Fleet) -> None:
    async def run() -> Counter[str]:
        # Pooled connections to the relay are dropped after 1 s idle, before the relay
        # (uvicorn: 5 s) drops them: no request is sent on a connection being closed.
        outer = httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=1.0))
        transport = AsyncOhttpTransport(
            fleet.lb_url, fleet.verifier(), relay_url=fleet.relay_url, outer_transport=outer
        )
        seen: Counter[str] = Counter()
        async with httpx.AsyncClient(
            transport=transport, base_url=fleet.lb_url, timeout=60
        ) as client:
            semaphore = asyncio.Semaphore(12)

            async def one() -> None:
                async with semaphore:
                    response = await client.get("/v1/models/status")
                    assert response.status_code == 200, response.text
                    seen[response.json()["replica_id"]] += 1

            await asyncio.gather(*(one() for _ in range(300)))
        return seen

    before = fleet.lb.chosen.copy()
    try:
        seen = asyncio.run(run())
    except BaseException:
        dump_logs(fleet)
        raise
    assert sum(seen.values()) == 300
    assert set(seen) == {f"replica-{i}" for i in range(TRUSTED)}, seen
    assert all(count >= 10 for count in seen.values()), seen
    assert sum((fleet.lb.chosen - before).values()) >= TRUSTED  # several connections


def test_a_replay_sent_to_another_replica_is_refused(fleet: Fleet) -> None:
    config = expected_configs(fleet.generations[0])[0]
    body = sealed_status_request(config)
    assert post_gateway(fleet, 0, body).status_code == 200
    for index in (1, 2, 0):
        replayed = post_gateway(fleet, index, body)
        assert (replayed.status_code, replayed.content) == (400, b"bad request\n")
    assert post_gateway(fleet, 1, sealed_status_request(config)).status_code == 200
    # Redis holds keyed hashes only: 32 hex characters under the prefix, never the enc.
    import redis as redis_client

    raw = redis_client.Redis.from_url(fleet.redis.url)
    keys = raw.keys("enclave:replay:*")
    assert keys
    assert all(len(key) == len(b"enclave:replay:") + 32 for key in keys)
    assert all(0 < raw.ttl(key) <= 62 for key in keys[:20])
    raw.close()


def test_enclave_models_acts_on_every_replica(fleet: Fleet) -> None:
    policy = fleet.tmp / "policy.toml"
    policy.write_text(policy_to_toml(fleet_policy()))
    urls = [arg for index in range(TRUSTED) for arg in ("--url", fleet.url(index))]
    trust = [
        "--policy", str(policy),
        "--collateral", str(fleet.tmp / "platform" / "collateral.json"),
        "--root-ca", str(fleet.tmp / "platform" / "root_ca.der"),
        "--insecure-simulated-root",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
    result = subprocess.run(
        [sys.executable, "-m", "enclave", "models", "load", "tiny", "--wait", *urls, *trust],
        capture_output=True, text=True, timeout=180, check=False,
        env={**env, "PYTHONPATH": str(ROOT), "ENCLAVE_LOAD_TOKEN": LOAD_TOKEN},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)["replicas"]
    assert [r["replica_id"] for r in report] == [f"replica-{i}" for i in range(TRUSTED)]
    assert all(r["document"]["proxy_status"] == "ready" for r in report)
    assert "3 of 3 replicas succeeded" in result.stderr
    # The fourth, with the same pinned policy, does not verify: reported, exit 1.
    result = subprocess.run(
        [sys.executable, "-m", "enclave", "models", "status", *urls[:2],
         "--url", fleet.url(TRUSTED), *trust],
        capture_output=True, text=True, timeout=120, check=False,
        env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 1
    report = json.loads(result.stdout)["replicas"]
    assert [r["exit"] for r in report] == [0, 1]
    assert "did not verify" in report[1]["errors"][0]


def test_a_rotation_at_the_broker_reaches_every_replica(fleet: Fleet) -> None:
    old = fleet.generations[0]
    new = generation((3, 4), "next")
    old_config, new_config = expected_configs(old)[0], expected_configs(new)[0]
    fleet.kbs.publish([old, new])  # 1: the next key, accepted before it is advertised

    def accepted_everywhere(config: KeyConfig) -> bool:
        return all(
            post_gateway(fleet, i, sealed_status_request(config)).status_code == 200
            for i in range(TRUSTED)
        )

    wait_until(lambda: accepted_everywhere(new_config), "the next key accepted everywhere", 20)
    assert all(
        next(iter(decode_key_configs(key_configs(fleet, i)[1]))) == old_config
        for i in range(TRUSTED)
    )
    current = dataclasses.replace(new, state="current")
    fleet.kbs.publish([dataclasses.replace(old, state="previous"), current])  # 2: flip

    def advertised_everywhere() -> bool:
        return all(
            next(iter(decode_key_configs(key_configs(fleet, i)[1]))) == new_config
            for i in range(TRUSTED)
        )

    wait_until(advertised_everywhere, "the new key advertised everywhere", 20)
    assert accepted_everywhere(old_config)  # the overlap: clients holding the old one work
    fleet.kbs.publish([current])  # 3: the overlap is over

    def old_refused() -> bool:
        return all(
            post_gateway(fleet, i, sealed_status_request(old_config)).status_code == 422
            for i in range(TRUSTED)
        )

    wait_until(old_refused, "the old key refused everywhere", 20)
    fleet.generations[:] = [current]


def test_receipts_from_each_replica_are_kept_with_that_replicas_certificate(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Through relay and balancer, answers come from replicas other than the one the proxy
    verified: each receipt names its replica's certificate, which the proxy (asking for it)
    verifies and keeps; every receipt then verifies offline from the folder alone."""
    from enclave.client._proxy import ProxyOptions, build_proxy_app
    from tests.integration.client.conftest import serve
    from tests.integration.client.test_policy_workflow import run_cli

    for index in range(TRUSTED):
        with fleet.plain(index) as client:
            if client.get("/v1/models/status").json()["proxy_status"] != "ready":
                loaded = client.post(
                    "/v1/models/load",
                    json={"model": "tiny"},
                    headers={"Authorization": f"Bearer {LOAD_TOKEN}"},
                )
                assert loaded.status_code in (200, 202), loaded.text
            wait_until(
                lambda c=client: c.get("/v1/models/status").json()["proxy_status"] == "ready",
                "loaded",
            )
    kept = tmp_path / "kept"

    async def run() -> list[Any]:
        transport = AsyncOhttpTransport(fleet.lb_url, fleet.verifier(), relay_url=fleet.relay_url)
        app = build_proxy_app(
            transport, options=ProxyOptions(receipts_dir=kept, through_relay=True)
        )
        body = {"model": "tiny", "messages": [{"role": "user", "content": "r"}], "max_tokens": 3}
        async with serve(app) as url, httpx.AsyncClient(timeout=60) as client:

            async def one(stream: bool) -> None:
                answer = await client.post(
                    url + "/v1/chat/completions", json={**body, "stream": stream}
                )
                assert answer.status_code == 200, answer.text

            await asyncio.gather(*(one(i % 2 == 0) for i in range(24)))
        return list(app.state.receipts.latest)

    latest = asyncio.run(run())
    assert len(latest) == 24
    assert all(item.verified for item in latest), [item.reason for item in latest]
    evidence = list((kept / "evidence").glob("*.json"))
    assert len(evidence) >= 2, evidence  # several replicas answered, each kept with its own
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_to_toml(fleet_policy()))
    trust = ("--root-ca", str(fleet.tmp / "platform" / "root_ca.der"), "--insecure-simulated-root")
    for receipt in sorted((kept / "receipts").glob("rcpt_*.json")):
        code, out, _ = run_cli("receipt", "verify", str(receipt), "--policy", str(policy), *trust)
        assert code == 0, out


def test_redis_gone_refuses_ohttp_never_accepts_unchecked(fleet: Fleet) -> None:
    config = expected_configs(fleet.generations[0])[0]
    fleet.redis.stop()
    for index in range(TRUSTED):
        refused = post_gateway(fleet, index, sealed_status_request(config))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "replay_store_unavailable"
    with fleet.plain(0) as client:
        assert client.get("/health").status_code == 200

    async def through_the_relay() -> None:
        transport = AsyncOhttpTransport(fleet.lb_url, fleet.verifier(), relay_url=fleet.relay_url)
        async with httpx.AsyncClient(transport=transport, base_url=fleet.lb_url) as client:
            await client.get("/v1/models/status")

    with pytest.raises(GatewayRefused) as refused_through_relay:
        asyncio.run(through_the_relay())
    assert refused_through_relay.value.status == 503
    assert refused_through_relay.value.code == "replay_store_unavailable"
