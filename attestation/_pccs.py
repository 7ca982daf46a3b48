"""Fetching DCAP collateral from a PCCS or Intel's PCS (API v4), in Python over httpx.

Why not ``dcap_qvl.get_collateral``: it runs on a Tokio runtime whose worker threads call back
into the interpreter (``loop.call_soon_threadsafe``) when a fetch ends. When the fetch fails
quickly (no PCCS listening, an HTTP error) the caller can print its error and reach interpreter
shutdown while that worker is still inside the call; CPython then ends the thread with
``pthread_exit``, whose forced unwind through Rust frames crashes the process (exit 139 or
135, seen in about one ``enclave models`` run in four). Fetching here keeps every thread that
touches the interpreter a Python one; dcap-qvl is still what parses and verifies the result.

The requests (``<base>`` is the URL with any ``/{sgx,tdx}/certification/v4`` suffix removed):

1. ``<base>/sgx/certification/v4/pckcrl?ca=<platform|processor>&encoding=der``: the PCK CRL
   (DER body), its issuer chain in ``SGX-PCK-CRL-Issuer-Chain`` (URL-encoded PEM);
2. ``<base>/<tee>/certification/v4/tcb?fmspc=<FMSPC>``: ``{"tcbInfo": ..., "signature": hex}``,
   chain in ``TCB-Info-Issuer-Chain`` (or ``SGX-TCB-Info-Issuer-Chain``);
3. ``<base>/<tee>/certification/v4/qe/identity?update=standard``:
   ``{"enclaveIdentity": ..., "signature": hex}``, chain in
   ``SGX-Enclave-Identity-Issuer-Chain``;
4. the root CA CRL: from a PCCS, ``<base>/sgx/certification/v4/rootcacrl`` (hex text); from
   Intel's PCS, or when a PCCS does not serve it, from the CRL distribution point of the root
   certificate that ends the QE identity's chain (DER).

The signed ``tcbInfo`` and ``enclaveIdentity`` objects are kept byte for byte as served (their
signatures cover those bytes). TLS certificates of the PCCS are not checked, as dcap-qvl does
not check them either: local PCCS deployments commonly use self-signed certificates, and the
collateral itself is signed by Intel's root and time-bounded, which verification checks.
"""

from __future__ import annotations

import json
import urllib.parse

import httpx
from cryptography import x509

from attestation._dcap import QuoteIds
from attestation.errors import PccsFetchError

__all__ = [
    "FETCH_TIMEOUT_SECONDS",
    "INTEL_PCS_PREFIX",
    "MAX_RESPONSE_BYTES",
    "PccsFetchError",
    "fetch_collateral",
]

FETCH_TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 4 << 20
INTEL_PCS_PREFIX = "https://api.trustedservices.intel.com"


async def fetch_collateral(url: str, ids: QuoteIds) -> str:
    """The collateral for ``ids`` as dcap-qvl's ``QuoteCollateralV3`` JSON; raises
    :class:`PccsFetchError`."""
    base = _base_url(url)
    async with httpx.AsyncClient(
        timeout=FETCH_TIMEOUT_SECONDS,
        verify=False,  # noqa: S501 - the collateral is signed; see the module docstring
        follow_redirects=True,
    ) as client:
        pck = await _get(client, f"{base}/sgx/certification/v4/pckcrl?ca={ids.ca}&encoding=der")
        tcb = await _get(client, f"{base}/{ids.tee}/certification/v4/tcb?fmspc={ids.fmspc}")
        qe = await _get(client, f"{base}/{ids.tee}/certification/v4/qe/identity?update=standard")
        qe_chain = _chain(qe, "SGX-Enclave-Identity-Issuer-Chain")
        root_crl = await _root_ca_crl(client, base, qe_chain)
    tcb_info, tcb_signature = _signed(tcb, "tcbInfo")
    qe_identity, qe_signature = _signed(qe, "enclaveIdentity")
    return json.dumps(
        {
            "pck_crl_issuer_chain": _chain(pck, "SGX-PCK-CRL-Issuer-Chain"),
            "root_ca_crl": root_crl.hex(),
            "pck_crl": pck.content.hex(),
            "tcb_info_issuer_chain": _chain(
                tcb, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"
            ),
            "tcb_info": tcb_info,
            "tcb_info_signature": tcb_signature,
            "qe_identity_issuer_chain": qe_chain,
            "qe_identity": qe_identity,
            "qe_identity_signature": qe_signature,
        }
    )


def _base_url(url: str) -> str:
    base = url.rstrip("/")
    for suffix in ("/sgx/certification/v4", "/tdx/certification/v4"):
        base = base.removesuffix(suffix)
    return base


async def _get(client: httpx.AsyncClient, url: str) -> httpx.Response:
    what = urllib.parse.urlsplit(url).path.rsplit("/v4/", 1)[-1] or url
    try:
        async with client.stream("GET", url) as response:
            body = bytearray()
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) > MAX_RESPONSE_BYTES:
                    raise PccsFetchError(f"{what}: response larger than {MAX_RESPONSE_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise PccsFetchError(f"{what}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise PccsFetchError(f"{what}: HTTP {response.status_code}")
    return httpx.Response(200, headers=response.headers, content=bytes(body))


def _chain(response: httpx.Response, *names: str) -> str:
    for name in names:
        value = response.headers.get(name)
        if value is not None:
            return urllib.parse.unquote(value)
    raise PccsFetchError(f"the answer has no {names[0]} header")


def _signed(response: httpx.Response, member: str) -> tuple[str, str]:
    """The raw text of ``member`` (as signed) and the hex signature next to it."""
    try:
        text = response.content.decode("utf-8")
        members = _raw_members(text)
        signature = json.loads(members["signature"])
        bytes.fromhex(signature)
        raw = members[member]
        if not isinstance(json.loads(raw), dict):
            raise TypeError(f"{member} is not an object")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise PccsFetchError(f"{member}: not the signed JSON document expected") from exc
    return raw, signature


def _raw_members(text: str) -> dict[str, str]:
    """The top-level members of a JSON object, each value as its exact source text."""
    decoder = json.JSONDecoder()
    index = _skip(text, 0)
    if text[index : index + 1] != "{":
        raise ValueError("not a JSON object")
    index = _skip(text, index + 1)
    members: dict[str, str] = {}
    while text[index : index + 1] != "}":
        key, index = decoder.raw_decode(text, index)
        index = _skip(text, index)
        if not isinstance(key, str) or text[index : index + 1] != ":":
            raise ValueError("malformed member")
        start = _skip(text, index + 1)
        _, index = decoder.raw_decode(text, start)
        members[key] = text[start:index]
        index = _skip(text, index)
        if text[index : index + 1] == ",":
            index = _skip(text, index + 1)
        elif text[index : index + 1] != "}":
            raise ValueError("malformed object")
    if _skip(text, index + 1) != len(text):
        raise ValueError("trailing data")
    return members


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


async def _root_ca_crl(client: httpx.AsyncClient, base: str, qe_chain: str) -> bytes:
    if not base.startswith(INTEL_PCS_PREFIX):
        try:
            served = await _get(client, f"{base}/sgx/certification/v4/rootcacrl")
            return bytes.fromhex(served.content.decode("ascii").strip())
        except (PccsFetchError, UnicodeDecodeError, ValueError):
            pass  # not every PCCS serves it: use the root certificate's distribution point
    return (await _get(client, _distribution_point(qe_chain))).content


def _distribution_point(chain_pem: str) -> str:
    try:
        root = x509.load_pem_x509_certificates(chain_pem.encode())[-1]
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (ValueError, IndexError, x509.ExtensionNotFound) as exc:
        raise PccsFetchError("the root CA names no CRL distribution point") from exc
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return str(name.value)
    raise PccsFetchError("the root CA names no CRL distribution point")
