"""OHTTP keys from the deployment's key broker, so that every replica decrypts for one key
configuration (docs/operations.md, "Replicas").

Sources (``ohttp_key_source``):

- ``local`` (default): each service generates its own keys and rotates them itself
  (:class:`~enclave.protocol.ohttp.KeyStore`; one replica).
- ``cdh``: the Confidential Containers guest's confidential-data-hub resource API,
  ``GET http://127.0.0.1:8006/cdh/resource/<repo>/<type>/<tag>``. The CDH fetches the resource
  from the Trustee KBS after attesting this guest; the KBS releases it only if its resource
  policy accepts the guest's evidence (the pinned measurements). The resource is a
  *key document* (below).
- ``dstack``: the dstack guest agent's ``GetKey`` (``/var/run/dstack.sock``), which derives a
  key from the app's root key held by dstack's KMS; the KMS serves that key only to instances
  its auth policy admits (the app's allowed compose hashes and OS measurements), and every
  instance of one app derives the same key for one path. Generations are epochs of
  ``ohttp_key_rotation_seconds``; the key for epoch ``n`` is ``GetKey(<path>/<n>)``.

The key document (JSON, format ``enclave-ohttp-keys/v1``)::

    {"format": "enclave-ohttp-keys/v1",
     "keys": [{"key_ids": [1, 2], "seed": "<base64 of 32 random bytes>", "state": "current"},
              {"key_ids": [3, 4], "seed": "<base64>", "state": "next"}]}

Each entry is a *generation*: its seed derives (HPKE DeriveKeyPair) the default pair of key
configurations, X-Wing under ``key_ids[0]`` and DHKEM(X25519) under ``key_ids[1]``, so every
replica derives the same keys and serves byte-identical ``/.well-known/ohttp-keys``. Exactly
one generation is ``current`` (advertised and accepted); ``next`` and ``previous`` ones are
accepted but not advertised, which is how two keys overlap during a rotation: publish the
next generation, wait one refresh period, make it current (the old one ``previous``), and
remove the previous one after the overlap. Seeds are secrets: never logged, never on disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import httpx

from enclave.errors import EnclaveError
from enclave.protocol._keystore import (
    DEFAULT_X25519_SYMMETRIC,
    DEFAULT_XWING_SYMMETRIC,
    GatewayKey,
    KeyStore,
)
from enclave.protocol.hpke import KemId, get_kem
from enclave.protocol.ohttp import KeyConfig

__all__ = [
    "DEFAULT_CDH_URL",
    "KEY_DOCUMENT_FORMAT",
    "CdhKeySource",
    "DstackKeySource",
    "KeyGeneration",
    "KeySource",
    "KeyUnavailableError",
    "State",
    "apply_generations",
    "check_cdh_url",
    "check_resource_path",
    "derive_generation_keys",
    "encode_key_document",
    "parse_key_document",
]

logger = logging.getLogger(__name__)

KEY_DOCUMENT_FORMAT = "enclave-ohttp-keys/v1"
DEFAULT_CDH_URL = "http://127.0.0.1:8006"
CDH_RESOURCE_PATH = "/cdh/resource/"
MAX_DOCUMENT_BYTES = 64 * 1024
SEED_BYTES = 32
_MAX_GENERATIONS = 4
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,128}")
_DERIVE_LABEL = b"enclave/ohttp-key-generation/v1/"

State = Literal["current", "next", "previous"]


class KeyUnavailableError(EnclaveError):
    """The broker did not release the key (refused, unreachable, or a malformed document).
    The message names the cause, never a secret."""


@dataclass(frozen=True, slots=True)
class KeyGeneration:
    """One generation of the shared keys: two key IDs, a secret seed, and its state."""

    key_ids: tuple[int, int]
    seed: bytes = field(repr=False)
    state: State


def check_resource_path(path: str) -> str:
    """``<repo>/<type>/<tag>`` (the KBS resource URI's path), each a plain name."""
    parts = path.split("/")
    if (
        len(parts) != 3
        or not all(_SEGMENT.fullmatch(part) for part in parts)
        or any(part in (".", "..") for part in parts)  # the URL would leave /cdh/resource/
    ):
        raise ValueError("ohttp_key_resource must be <repo>/<type>/<tag> of [A-Za-z0-9._-]")
    return path


def check_cdh_url(url: str) -> str:
    """An ``http://<loopback IP literal>[:port]`` origin: the CDH API is the guest's own;
    a host name (even localhost: /etc/hosts comes from the host) or a path is refused."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError("ohttp_key_cdh_url is not a URL") from exc
    if parsed.scheme != "http" or not parsed.host:
        raise ValueError("ohttp_key_cdh_url must be an http:// origin")
    if parsed.userinfo or parsed.query or parsed.fragment or parsed.path not in ("", "/"):
        raise ValueError("ohttp_key_cdh_url must be a bare origin (no path, query or user)")
    try:
        loopback = ipaddress.ip_address(parsed.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError("ohttp_key_cdh_url must be a loopback IP literal (127.0.0.1 or ::1)")
    return url


def parse_key_document(body: bytes) -> tuple[KeyGeneration, ...]:
    """The generations of a key document; :class:`KeyUnavailableError` if it is not one."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyUnavailableError("the key document is not JSON") from exc
    if not isinstance(document, dict) or document.get("format") != KEY_DOCUMENT_FORMAT:
        raise KeyUnavailableError(f"the key document's format is not {KEY_DOCUMENT_FORMAT}")
    entries = document.get("keys")
    if not isinstance(entries, list) or not 1 <= len(entries) <= _MAX_GENERATIONS:
        raise KeyUnavailableError(f"the key document needs 1 to {_MAX_GENERATIONS} keys")
    generations = tuple(_generation(entry) for entry in entries)
    if [g.state for g in generations].count("current") != 1:
        raise KeyUnavailableError("the key document needs exactly one current generation")
    ids = [key_id for g in generations for key_id in g.key_ids]
    if len(set(ids)) != len(ids):
        raise KeyUnavailableError("the key document reuses a key ID")
    return generations


def _generation(entry: object) -> KeyGeneration:
    if not isinstance(entry, dict):
        raise KeyUnavailableError("a key document entry is not an object")
    key_ids, seed, state = entry.get("key_ids"), entry.get("seed"), entry.get("state")
    if (
        not isinstance(key_ids, list)
        or len(key_ids) != 2
        or not all(
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= 255 for k in key_ids
        )
        or key_ids[0] == key_ids[1]
    ):
        raise KeyUnavailableError("key_ids must be two distinct integers 0..255")
    if state not in ("current", "next", "previous"):
        raise KeyUnavailableError("state must be current, next or previous")
    if not isinstance(seed, str):
        raise KeyUnavailableError("seed must be base64 text")
    try:
        raw = base64.b64decode(seed.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise KeyUnavailableError("seed is not base64") from exc
    if len(raw) != SEED_BYTES:
        raise KeyUnavailableError(f"seed must be {SEED_BYTES} bytes")
    return KeyGeneration((key_ids[0], key_ids[1]), raw, state)


def encode_key_document(generations: Sequence[KeyGeneration]) -> bytes:
    """The document for ``generations`` (what an operator uploads to the KBS)."""
    keys = [
        {
            "key_ids": list(g.key_ids),
            "seed": base64.b64encode(g.seed).decode("ascii"),
            "state": g.state,
        }
        for g in generations
    ]
    return json.dumps({"format": KEY_DOCUMENT_FORMAT, "keys": keys}, indent=1).encode()


def derive_generation_keys(generation: KeyGeneration) -> tuple[GatewayKey, GatewayKey]:
    """The generation's X-Wing and X25519 keys, the same on every replica."""
    keys = []
    layout = (
        (KemId.X_WING, DEFAULT_XWING_SYMMETRIC),
        (KemId.DHKEM_X25519_HKDF_SHA256, DEFAULT_X25519_SYMMETRIC),
    )
    for key_id, (kem_id, symmetric) in zip(generation.key_ids, layout, strict=True):
        label = _DERIVE_LABEL + str(int(kem_id)).encode()
        ikm = hmac.new(generation.seed, label, hashlib.sha256).digest()
        private_key = get_kem(kem_id).derive_key_pair(ikm)
        config = KeyConfig(key_id, kem_id, private_key.public_key_bytes(), symmetric)
        keys.append(GatewayKey(config, private_key))
    return keys[0], keys[1]


def apply_generations(store: KeyStore, generations: Sequence[KeyGeneration]) -> bool:
    """Make ``store`` hold exactly these generations (the current one advertised); True if
    anything changed."""
    active: list[GatewayKey] = []
    accepted: list[GatewayKey] = []
    for generation in generations:
        pair = derive_generation_keys(generation)
        accepted.extend(pair)
        if generation.state == "current":
            active.extend(pair)
    return store.replace(active, accepted)


class KeySource(Protocol):
    """Where a replica's OHTTP keys come from (``name`` for logs)."""

    name: str

    async def fetch(self) -> tuple[KeyGeneration, ...]: ...


class CdhKeySource:
    """The key document from the CoCo confidential-data-hub resource API."""

    name = "cdh"

    def __init__(self, base_url: str, resource: str, *, timeout: float = 30.0) -> None:
        self._url = check_cdh_url(base_url).rstrip("/") + CDH_RESOURCE_PATH
        self._url += check_resource_path(resource)
        self._timeout = timeout

    async def fetch(self) -> tuple[KeyGeneration, ...]:
        try:
            async with (
                httpx.AsyncClient(
                    timeout=self._timeout, trust_env=False, follow_redirects=False
                ) as client,
                client.stream("GET", self._url) as response,
            ):
                body = await _read_bounded(response)
                status = response.status_code
        except httpx.HTTPError as exc:
            raise KeyUnavailableError(
                f"the confidential-data-hub API did not answer ({type(exc).__name__})"
            ) from exc
        if status != httpx.codes.OK:
            raise KeyUnavailableError(
                f"the key broker did not release the key (confidential-data-hub answered HTTP "
                f"{status}: the KBS resource policy refused this guest, or the resource is "
                "missing)"
            )
        return parse_key_document(body)


class DstackKeySource:
    """Generations derived from dstack's KMS through the guest agent's ``GetKey``: epoch
    ``n = floor(now / period)`` is current, ``n + 1`` next and ``n - 1`` previous; the key
    IDs of epoch ``n`` are ``2n mod 256`` and ``2n + 1 mod 256``."""

    name = "dstack"

    def __init__(
        self,
        socket_path: Path,
        key_path: str,
        period_seconds: float,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._socket = Path(socket_path)
        self._key_path = key_path.strip("/")
        self._period = period_seconds
        self._timeout = timeout
        self._clock = clock

    async def fetch(self) -> tuple[KeyGeneration, ...]:
        if not self._socket.exists():
            raise KeyUnavailableError(f"no dstack agent socket at {self._socket}")
        epoch = int(self._clock() // self._period)
        states: tuple[tuple[int, State], ...] = (
            (epoch - 1, "previous"),
            (epoch, "current"),
            (epoch + 1, "next"),
        )
        generations = []
        for number, state in states:
            seed = await self._get_key(f"{self._key_path}/{number}")
            ids = ((2 * number) % 256, (2 * number + 1) % 256)
            generations.append(KeyGeneration(ids, seed, state))
        return tuple(generations)

    async def _get_key(self, path: str) -> bytes:
        transport = httpx.AsyncHTTPTransport(uds=str(self._socket))
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://dstack", timeout=self._timeout
            ) as client:
                response = await client.post(
                    "/GetKey", json={"path": path, "purpose": "enclave-ohttp"}
                )
        except httpx.HTTPError as exc:
            raise KeyUnavailableError(
                f"the dstack agent did not answer GetKey ({type(exc).__name__})"
            ) from exc
        if response.status_code != httpx.codes.OK:
            raise KeyUnavailableError(
                f"the dstack KMS did not release the key (GetKey: HTTP {response.status_code})"
            )
        try:
            key = bytes.fromhex(response.json()["key"])
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyUnavailableError("the dstack agent's GetKey reply has no hex key") from exc
        if len(key) < 16:
            raise KeyUnavailableError("the dstack agent's key is too short")
        return hashlib.sha256(_DERIVE_LABEL + key).digest()


async def _read_bounded(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise KeyUnavailableError(f"the key document exceeds {MAX_DOCUMENT_BYTES} bytes")
    return bytes(body)
