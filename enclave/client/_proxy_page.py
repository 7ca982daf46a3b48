"""``GET /proxy/``: the local proxy's verification page, for a person to read (no I/O here).

One self-contained HTML document (inline CSS, no script, no external asset: nothing is
fetched by a browser that opens it): whether the endpoint is verified now and when it was
last verified and checked, each numbered verification step with what it checked, against
what, and its result (the document of ``enclave verify``), the pinned policy (``NOT PINNED``
in red when it pins no measurement), the model and its digest, the GPUs, and the latest
answers' receipts with the proxy's check of each. It reads only the proxy's own state; the
proxy re-verifies a stale endpoint before rendering it, so a service that changed under the
proxy shows as FAILED with its reason.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime

from attestation.policy import Policy, policy_to_toml
from enclave.client._document import VerificationDocument
from enclave.client._endpoint import VerifiedEndpoint
from enclave.client._receipts import KeptReceipt

__all__ = ["PAGE_PATH", "render_page"]

PAGE_PATH = "/proxy/"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#111}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.ok{color:#05660d;font-weight:bold}.bad{color:#b00000;font-weight:bold}
.banner{padding:.6em 1em;border-radius:.3em;font-size:1.2em;font-weight:bold}
.banner.ok{background:#e3f6e5}.banner.bad{background:#fde4e4}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3em .5em;
text-align:left;vertical-align:top;font-size:.92em;overflow-wrap:anywhere}th{background:#f3f3f3}
code,pre{font-family:ui-monospace,monospace;font-size:.88em;word-break:break-all}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _iso(stamp: float | None) -> str:
    if not stamp:
        return "never"
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _result_class(result: str) -> str:
    return "bad" if result.startswith("FAIL") else "ok" if result == "ok" else ""


def render_page(
    *,
    url: str,
    compat: str,
    policy: Policy,
    document: VerificationDocument,
    endpoint: VerifiedEndpoint | None,
    failure: str | None,
    last_checked: float | None,
    receipts: Iterable[KeptReceipt],
    receipts_dir: str | None,
) -> str:
    verified = document.verified and failure is None
    status = "VERIFIED" if verified else "FAILED" + (f": {failure}" if failure else "")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width'>",
        f"<title>enclave proxy: {_e(status)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Confidential endpoint <code>{_e(url)}</code></h1>",
        f"<p class='banner {'ok' if verified else 'bad'}' id=status>{_e(status)}</p>",
        "<table><tr><th>last verified</th><td id=last-verified>"
        + _e(_iso(None if endpoint is None else endpoint.verified_at))
        + "</td></tr><tr><th>last checked</th><td>"
        + _e(_iso(last_checked))
        + f"</td></tr><tr><th>API surface</th><td>{_e(compat)}</td></tr>"
        + (
            ""
            if document.detail is None or verified
            else f"<tr><th>detail</th><td class=bad>{_e(document.detail)}</td></tr>"
        )
        + "</table>",
    ]
    parts += _policy(policy, document)
    parts += _steps(document)
    parts += _model_and_gpus(endpoint, verified)
    parts += _receipts(receipts, receipts_dir)
    parts.append("</body></html>")
    return "".join(parts)


def _policy(policy: Policy, document: VerificationDocument) -> list[str]:
    pinned = policy.pins_measurements
    out = ["<h2>Pinned policy</h2>"]
    if pinned:
        out.append("<p class=ok id=pinned>PINNED: MRTD and RTMR0-2 must be the values below</p>")
    else:
        out.append(
            "<p class='banner bad' id=pinned>NOT PINNED: this policy pins no measurement, any "
            "TDX VM would pass (insecure_any_measurement)</p>"
        )
    if document.insecure:
        out.append(
            "<p class=bad>verified under INSECURE options: "
            + _e(", ".join(document.insecure))
            + "</p>"
        )
    out.append(f"<pre id=policy>{_e(policy_to_toml(policy))}</pre>")
    return out


def _steps(document: VerificationDocument) -> list[str]:
    rows = [
        "<h2>Verification steps</h2><table id=steps>"
        "<tr><th>#</th><th>step</th><th>checked</th><th>against</th><th>result</th></tr>"
    ]
    for step in document.steps:
        rows.append(
            f"<tr><td>{_e(step.number)}</td><td>{_e(step.title)}</td><td>{_e(step.checked)}"
            f"</td><td>{_e(step.against)}</td><td class='{_result_class(step.result)}'>"
            f"{_e(step.result)}</td></tr>"
        )
    rows.append("</table>")
    return rows


def _model_and_gpus(endpoint: VerifiedEndpoint | None, verified: bool) -> list[str]:
    stale = "" if verified else " (as last verified, before the failure)"
    out = [f"<h2>Model{stale}</h2>"]
    if endpoint is None or endpoint.model is None:
        out.append("<p id=model>none verified</p>")
    else:
        model = endpoint.model
        out.append(
            f"<p id=model><b>{_e(model.name)}</b>, {_e(model.digest_kind)} "
            f"<code>{_e(model.digest.hex())}</code></p>"
        )
    out.append(f"<h2>GPUs{stale}</h2>")
    if endpoint is None or not endpoint.gpus:
        out.append("<p id=gpus>none</p>")
    else:
        out.append("<table id=gpus><tr><th>#</th><th>GPU</th><th>driver</th><th>VBIOS</th>")
        out.append("<th>CC mode</th><th>measurements</th></tr>")
        for index, gpu in enumerate(endpoint.gpus):
            out.append(
                f"<tr><td>{index}</td><td>{_e(gpu.architecture)}</td>"
                f"<td>{_e(gpu.driver_version)}</td><td>{_e(gpu.vbios_version)}</td>"
                f"<td>{_e(gpu.cc_mode)}</td><td>{len(gpu.measurements)}</td></tr>"
            )
        out.append("</table>")
    if endpoint is not None:
        key = endpoint.receipt_key_sha256
        out.append(
            "<p>receipt key (SHA-256): <code>"
            + _e("none" if key is None else key.hex())
            + "</code></p>"
        )
    return out


def _receipts(receipts: Iterable[KeptReceipt], receipts_dir: str | None) -> list[str]:
    kept = list(receipts)
    out = [
        "<h2>Latest receipts</h2>",
        "<p>kept in "
        + (f"<code>{_e(receipts_dir)}</code>" if receipts_dir else "memory only (no --receipts)")
        + "</p>",
    ]
    if not kept:
        out.append("<p id=receipts>none yet</p>")
        return out
    out.append(
        "<table id=receipts><tr><th>time</th><th>receipt</th><th>route</th><th>model</th>"
        "<th>check</th></tr>"
    )
    for item in kept:
        check = "verified" if item.verified else f"FAIL ({item.reason})"
        out.append(
            f"<tr><td>{_e(_iso(item.time))}</td><td><code>{_e(item.receipt_id or '-')}</code>"
            f"</td><td>{_e(item.route)}</td><td>{_e(item.model or '-')}</td>"
            f"<td class='{'ok' if item.verified else 'bad'}'>{_e(check)}</td></tr>"
        )
    out.append("</table>")
    return out
