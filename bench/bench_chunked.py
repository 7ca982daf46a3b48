"""Costs of the encryption core. Prints figures and ratios; asserts nothing.

1. Sealing one 64-byte chunk with ``ChunkedResponseEncoder.seal_chunk`` (the per-token hot path),
   as a ratio to a bare ``AESGCM(key).encrypt`` of the same bytes (target: <= 1.5x), for
   AES-256-GCM (the X-Wing default) and AES-128-GCM; and the same for a 240-byte chunk, the
   size of a real vLLM token event. What seal_chunk adds per call: a fresh 12-byte nonce
   (``int.to_bytes``, ~110 ns), the length prefix (one concatenation, ~70 ns), the call and
   its checks (~300 ns on this machine).
2. The gateway's per-request HPKE work, X-Wing decapsulation plus key schedule plus opening the
   request, as a ratio to cryptography's one-shot ``hpke.Suite.decrypt`` of the same message
   (its own, independent implementation of the same suite).
3. Decapsulating one whole OHTTP request at the gateway, X-Wing vs DHKEM(X25519), RFC 9458 and
   chunked (header, one chunk, final chunk).

The two sides of every ratio are timed alternately, round by round, and each keeps its best
round, so a load that comes and goes on the machine falls on both.

Run: python3 bench/bench_chunked.py
"""

from __future__ import annotations

import hashlib
import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hpke as reference
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.protocol.chunked import (
    ChunkedRequestDecoder,
    ChunkedRequestEncoder,
    ChunkedResponseEncoder,
)
from enclave.protocol.hpke import AeadId, KdfId, KemId, Suite, setup_base_recipient
from enclave.protocol.ohttp import (
    KeyStore,
    decapsulate_request,
    encapsulate_request,
    generate_default_key_configs,
)
from enclave.protocol.xwing import XWING

ROUNDS = 9
SEAL_CALLS = 50_000
REQUEST_CALLS = 200
CHUNK = os.urandom(64)
#: A vLLM chat chunk carrying one token is about this long (id, model, choices, delta JSON).
TOKEN_EVENT = os.urandom(240)
BHTTP_REQUEST = b"\x00\x04POST\x05https\x0benclave.test\x14/v1/chat/completions" + os.urandom(400)


def side_by_side(
    ours: Callable[[], object], theirs: Callable[[], object], number: int
) -> tuple[float, float]:
    """Best seconds per call of each, the two timed alternately."""
    best_ours = best_theirs = float("inf")
    for _ in range(ROUNDS):
        best_ours = min(best_ours, timeit.timeit(ours, number=number) / number)
        best_theirs = min(best_theirs, timeit.timeit(theirs, number=number) / number)
    return best_ours, best_theirs


def seal_ratio(aead: AeadId, chunk: bytes) -> tuple[float, float]:
    suite = Suite.from_ids(KemId.X_WING, KdfId.HKDF_SHA256, aead)
    encoder = ChunkedResponseEncoder(suite, os.urandom(1120), os.urandom(32))
    encrypt = AESGCM(os.urandom(suite.aead.key_size)).encrypt
    nonce = os.urandom(suite.aead.nonce_size)
    seal = encoder.seal_chunk
    return side_by_side(lambda: seal(chunk), lambda: encrypt(nonce, chunk, None), SEAL_CALLS)


def xwing_request_ratio() -> tuple[float, float]:
    suite = Suite(KemId.X_WING, KdfId.HKDF_SHA256, AeadId.AES_256_GCM)
    key = XWING.generate_private_key()
    expanded = hashlib.shake_256(key.private_bytes()).digest(96)
    their_key = reference.MLKEM768X25519PrivateKey(
        MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        X25519PrivateKey.from_private_bytes(expanded[64:]),
    )
    their_suite = reference.Suite(
        reference.KEM.MLKEM768_X25519, reference.KDF.HKDF_SHA256, reference.AEAD.AES_256_GCM
    )
    info = b"message/bhttp request\x00" + b"\x01\x64\x7a\x00\x01\x00\x02"
    message = their_suite.encrypt(BHTTP_REQUEST, their_key.public_key(), info=info)
    enc, ciphertext = message[:1120], message[1120:]

    def ours() -> bytes:
        return setup_base_recipient(suite, enc, key, info).open(b"", ciphertext)

    def theirs() -> bytes:
        return their_suite.decrypt(message, their_key, info=info)

    if ours() != theirs():
        raise SystemExit("the two implementations disagree")
    return side_by_side(ours, theirs, REQUEST_CALLS)


def decapsulation_costs(store: KeyStore, kem: KemId) -> tuple[float, float]:
    config = next(c for c in store.active_configs if c.kem_id == kem)
    encapsulated, _ = encapsulate_request(config, BHTTP_REQUEST)
    encoder = ChunkedRequestEncoder(config)
    wire = encoder.header + encoder.seal_chunk(BHTTP_REQUEST) + encoder.seal_chunk(b"", final=True)

    def chunked() -> None:
        decoder = ChunkedRequestDecoder(store)
        decoder.feed(wire)
        decoder.finish()

    return side_by_side(lambda: decapsulate_request(store, encapsulated), chunked, REQUEST_CALLS)


def main() -> None:
    print("1. seal one chunk: ChunkedResponseEncoder.seal_chunk vs bare AESGCM.encrypt")
    for chunk, what in ((CHUNK, "64-byte chunk"), (TOKEN_EVENT, "240-byte token event")):
        for aead in (AeadId.AES_256_GCM, AeadId.AES_128_GCM):
            ours, base = seal_ratio(aead, chunk)
            print(
                f"   {what:<21} {aead.name:<12} seal_chunk {ours * 1e9:6.0f} ns"
                f"   AESGCM.encrypt {base * 1e9:6.0f} ns   ratio {ours / base:.2f}x"
            )
    print("   (target for the 64-byte chunk: <= 1.5x)")
    ours, theirs = xwing_request_ratio()
    print(f"2. X-Wing request ({len(BHTTP_REQUEST)} bytes): decapsulate + key schedule + open")
    print(
        f"   ours {ours * 1e6:6.1f} us   cryptography one-shot Suite.decrypt {theirs * 1e6:6.1f} us"
        f"   ratio {ours / theirs:.2f}x"
    )
    store = KeyStore(generate_default_key_configs())
    print("3. gateway decapsulation of one whole OHTTP request")
    costs = {
        kem: decapsulation_costs(store, kem)
        for kem in (KemId.X_WING, KemId.DHKEM_X25519_HKDF_SHA256)
    }
    for kem, (plain, chunked) in costs.items():
        print(f"   {kem.name:<26} RFC 9458 {plain * 1e6:6.1f} us   chunked {chunked * 1e6:6.1f} us")
    xwing, x25519 = costs[KemId.X_WING][0], costs[KemId.DHKEM_X25519_HKDF_SHA256][0]
    print(f"   X-Wing / X25519 (RFC 9458): {xwing / x25519:.2f}x")


if __name__ == "__main__":
    main()
