"""A few of vLLM's ``vllm:*`` Prometheus metrics, in a private registry.

Labels are ``model_name`` and ``engine`` (plus ``finished_reason`` on request counts): no
request content ever becomes a label.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["EngineMetrics", "StatsWindow"]


@dataclass(slots=True)
class StatsWindow:
    """Token counts since the last periodic stats line."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests: int = 0

    def take(self) -> tuple[int, int, int]:
        taken = (self.prompt_tokens, self.generation_tokens, self.requests)
        self.prompt_tokens = self.generation_tokens = self.requests = 0
        return taken


class EngineMetrics:
    """The engine's counters and gauges; :meth:`render` gives the text exposition."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model_name", "engine")
        self._labels = {"model_name": model_name, "engine": "0"}
        self._running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels,
            registry=self.registry,
        )
        self._waiting = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            labels,
            registry=self.registry,
        )
        self._prompt = Counter(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            labels,
            registry=self.registry,
        )
        self._generation = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=self.registry,
        )
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=self.registry,
        )
        self._waiting.labels(**self._labels).set(0)
        self._running.labels(**self._labels).set(0)
        self.window = StatsWindow()
        self._active = 0

    @property
    def running(self) -> int:
        return self._active

    def started(self, prompt_tokens: int) -> None:
        self._active += 1
        self._running.labels(**self._labels).inc()
        self._prompt.labels(**self._labels).inc(prompt_tokens)
        self.window.prompt_tokens += prompt_tokens
        self.window.requests += 1

    def finished(self, generated_tokens: int, finished_reason: str | None) -> None:
        """A request ended; ``finished_reason`` is None when it was cut (not a success)."""
        self._active -= 1
        self._running.labels(**self._labels).dec()
        self._generation.labels(**self._labels).inc(generated_tokens)
        self.window.generation_tokens += generated_tokens
        if finished_reason is not None:
            self._success.labels(**self._labels, finished_reason=finished_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
