"""One exposition for the owner and its workers: the owner sums the workers' samples into its own.

Counters, histograms and summaries add up across processes; a gauge is the owner's (the model
state, the certificate's and keys' ages: the owner holds them), except the gauges that count
something each worker holds (:data:`SUMMED_GAUGES`), which add up too. A ``_created`` sample
is the earliest. The owner also adds, per worker (label ``worker``: its index, a fixed set),
whether it answered this scrape, how often it was restarted, and the requests it answered,
so an operator sees how evenly the kernel spreads connections."""

from __future__ import annotations

import math
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["SUMMED_GAUGES", "merge_expositions"]

#: Gauges that count what each process holds: summed across the workers.
SUMMED_GAUGES = frozenset({"enclave_active_streams"})
_REQUESTS = "enclave_http_requests_total"

_Key = tuple[str, tuple[tuple[str, str], ...]]


class _Family:
    def __init__(self, name: str, kind: str, documentation: str) -> None:
        self.name = name
        self.kind = kind
        self.documentation = documentation
        self.samples: dict[_Key, float] = {}


def _parse(text: str) -> list[_Family]:
    families = []
    for metric in text_string_to_metric_families(text):
        family = _Family(metric.name, metric.type, metric.documentation)
        for sample in metric.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            family.samples[key] = float(sample.value)
        families.append(family)
    return families


def _combine(family: _Family, key: _Key, value: float, *, owner: bool) -> None:
    """Fold one sample in: summed, the earliest ``_created``, or (a gauge the owner holds) the
    owner's value, a worker's only where the owner has none."""
    held = family.samples.get(key)
    if held is None:
        family.samples[key] = value
    elif key[0].endswith("_created"):
        family.samples[key] = min(held, value)
    elif family.kind != "gauge" or family.name in SUMMED_GAUGES:
        family.samples[key] = held + value
    elif owner:
        family.samples[key] = value


def merge_expositions(
    owner: bytes, workers: Sequence[bytes | None], restarts: Sequence[int]
) -> bytes:
    """The owner's exposition with every answering worker's summed in, and the per-worker
    series (``None``: that worker did not answer)."""
    merged: dict[str, _Family] = {}
    order: list[str] = []
    for family in _parse(owner.decode()):
        merged[family.name] = family
        order.append(family.name)
    owners_gauges = {
        name for name, family in merged.items() if family.kind == "gauge"
    } - SUMMED_GAUGES
    requests: list[float] = []
    for exposition in workers:
        served = 0.0
        if exposition is not None:
            for family in _parse(exposition.decode()):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = _Family(
                        family.name, family.kind, family.documentation
                    )
                    order.append(family.name)
                for key, value in family.samples.items():
                    if key[0] == _REQUESTS:
                        served += value
                    if family.name in owners_gauges:
                        continue  # the owner's state (e.g. build_info): never a worker's copy
                    _combine(into, key, value, owner=False)
        requests.append(served)
    lines: list[str] = []
    for name in order:
        family = merged[name]
        lines.append(f"# HELP {name} {_escape_help(family.documentation)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for (sample, labels), value in family.samples.items():
            lines.append(f"{sample}{_labels(labels)} {_number(value)}")
    lines += _worker_lines(workers, restarts, requests)
    return ("\n".join(lines) + "\n").encode()


def _worker_lines(
    workers: Sequence[bytes | None], restarts: Sequence[int], requests: Sequence[float]
) -> list[str]:
    lines = [
        "# HELP enclave_data_plane_workers Data-plane worker processes configured.",
        "# TYPE enclave_data_plane_workers gauge",
        f"enclave_data_plane_workers {len(workers)}.0",
        "# HELP enclave_data_plane_worker_up 1 if the worker answered this scrape, else 0.",
        "# TYPE enclave_data_plane_worker_up gauge",
    ]
    lines += [
        f'enclave_data_plane_worker_up{{worker="{i}"}} {0.0 if e is None else 1.0}'
        for i, e in enumerate(workers)
    ]
    lines += [
        "# HELP enclave_data_plane_worker_restarts Times the owner restarted the worker.",
        "# TYPE enclave_data_plane_worker_restarts counter",
    ]
    lines += [
        f'enclave_data_plane_worker_restarts_total{{worker="{i}"}} {float(n)}'
        for i, n in enumerate(restarts)
    ]
    lines += [
        "# HELP enclave_data_plane_worker_requests HTTP requests the worker answered "
        "(since it last started).",
        "# TYPE enclave_data_plane_worker_requests counter",
    ]
    lines += [
        f'enclave_data_plane_worker_requests_total{{worker="{i}"}} {_number(n)}'
        for i, n in enumerate(requests)
    ]
    return lines


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape_value(value)}"' for name, value in labels) + "}"
