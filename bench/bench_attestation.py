"""Attestation costs, each against a plain TLS handshake on loopback as the unit.

Run: python3 bench/bench_attestation.py [--repeat N]. Prints milliseconds and ratios for:
- DCAP quote verification with collateral already in memory (the real tdx_quote sample);
- RA-TLS certificate issuance with the simulator as quote provider (quote + signing);
- the evidence check a client does per connection (parse the certificate, verify evidence).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation.collateral import Collateral
from attestation.ratls import RaTlsIssuer, parse_certificate
from attestation.verify import verify_evidence, verify_quote
from enclave_dev.tee import Simulator

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "tdx"
TDX_NOW = 1752919234


def best_ms(function: Callable[[], object], repeat: int, number: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e3


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for the baseline TLS server (a bench key, not an RA-TLS key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
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


class LoopbackTls:
    """A TLS 1.3 server on 127.0.0.1 that completes handshakes and closes."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(cert, key)
        self.client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client_context.check_hostname = False
        self.client_context.verify_mode = ssl.CERT_NONE
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    def handshake(self) -> bytes:
        with (
            socket.create_connection(("127.0.0.1", self.port)) as raw,
            self.client_context.wrap_socket(raw) as tls,
        ):
            peer = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
            return peer or b""

    def close(self) -> None:
        self.listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = LoopbackTls(*_self_signed(Path(tmp)))
        try:
            handshake = best_ms(server.handshake, args.repeat, 50)
        finally:
            server.close()

    quote = (VECTORS / "tdx_quote").read_bytes()
    collateral = Collateral.load(VECTORS / "tdx_quote_collateral.json")
    dcap = best_ms(lambda: verify_quote(quote, collateral=collateral, now=TDX_NOW), args.repeat, 20)

    sim = Simulator.create()

    async def sim_quote(report_data: bytes) -> bytes:
        return sim.quote(report_data)

    issuer = RaTlsIssuer(sim_quote)

    def issue() -> bytes:
        issued = asyncio.run(issuer.issue(ohttp_keys_body=b"keys", service_version="bench"))
        return issued.certificate_der

    issuance = best_ms(issue, args.repeat, 10)
    certificate = issue()
    sim_collateral = Collateral.from_json(sim.collateral_json())

    def check() -> object:
        found = parse_certificate(certificate)
        return verify_evidence(
            found.evidence,
            collateral=sim_collateral,
            peer_spki_der=found.spki_der,
            now=sim.now,
            insecure_root_ca_der=sim.root_ca_der,
        )

    evidence_check = best_ms(check, args.repeat, 20)

    print(f"plain TLS 1.3 handshake on loopback (unit): {handshake:8.3f} ms")
    for label, value in (
        ("DCAP quote verification, cached collateral", dcap),
        ("RA-TLS certificate issuance (simulator)", issuance),
        ("evidence check per connection", evidence_check),
    ):
        print(f"{label:45s} {value:8.3f} ms  = {value / handshake:6.2f} x handshake")


if __name__ == "__main__":
    main()
