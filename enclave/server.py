"""The composition root: every part of the service wired together, served over RA-TLS.

:class:`EnclaveServer` builds the :class:`~enclave.service.Service` (model manager, engine
client, metrics), the OHTTP key store and gateway, the quote provider, the RA-TLS certificate
manager and the attestation report, and keeps the certificate's claims current: it is reissued
when the model changes (a hook on every lifecycle transition), when the OHTTP keys rotate, and
at 80% of its lifetime. :meth:`EnclaveServer.serve` issues the first certificate, then runs
uvicorn with the live TLS context; SIGTERM stops accepting, drains open streams for the grace
period, stops the engine, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE

from attestation.evidence import ModelClaim
from attestation.gpu.providers import GpuProvider, make_gpu_provider
from attestation.providers import QuoteProvider, detect_provider
from attestation.ratls import RaTlsIssuer
from enclave import __version__, development
from enclave._receipts import ReceiptIssuer
from enclave.app import build_app, build_metrics_app
from enclave.gateway import (
    OhttpGateway,
    RedisReplayStore,
    ReplayStore,
    ReplayStoreUnavailableError,
    gateway_routes,
)
from enclave.keybroker import (
    CdhKeySource,
    DstackKeySource,
    KeySource,
    KeyUnavailableError,
    apply_generations,
)
from enclave.metrics import ServiceMetrics
from enclave.net import BodyGuard, BodyLimits, ConnectionLimits, GuardedServer
from enclave.net._connections import bind_sockets, fit_to_descriptor_limit
from enclave.net._server import STREAM_END_SECONDS
from enclave.protocol.ohttp import KeyStore, generate_default_key_configs
from enclave.report import RateLimiter, ReportSource, report_routes
from enclave.service import Service
from enclave.settings import EnclaveSettings, data_plane_workers
from enclave.tls import CertificateManager, model_claim
from model_manager import ModelStatus, StatusPusher

__all__ = ["EnclaveServer", "GatewayMetrics", "SimulatedTee"]

if TYPE_CHECKING:  # the development package is in no production build; types only here
    from enclave.workers import WorkerPool
    from enclave_dev.gpu import SimulatedGpuProvider
    from enclave_dev.tee import Simulator

logger = logging.getLogger(__name__)


class GatewayMetrics:
    """The gateway's observer, reporting into the service's metrics registry."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def failure(self, reason: str) -> None:
        self._metrics.ohttp_failure(reason)
        if reason == "replay":
            self._metrics.replay_refused()

    def chunk_sealed(self) -> None:
        self._metrics.ohttp_chunk_sealed()

    def request_served(self, chunked: bool) -> None:
        return None


def _key_source(settings: EnclaveSettings) -> KeySource | None:
    """The key broker of ``ohttp_key_source``, or None for keys generated here."""
    service = settings.service
    if service.ohttp_key_source == "cdh":
        return CdhKeySource(service.ohttp_key_cdh_url, service.ohttp_key_resource, timeout=10.0)
    if service.ohttp_key_source == "dstack":
        return DstackKeySource(
            Path(service.ohttp_key_dstack_socket),
            service.ohttp_key_dstack_path,
            service.ohttp_key_rotation_seconds,
            timeout=10.0,
        )
    return None


def _shared_replay_store(settings: EnclaveSettings) -> ReplayStore | None:
    """The replay set shared by replicas (``replay_store`` a Redis URL), or None: memory."""
    service = settings.service
    if service.replay_store == "memory":
        return None
    password = service.replay_store_password
    return RedisReplayStore(
        service.replay_store,
        password=None if password is None else password.get_secret_value(),
        prefix=service.replay_store_prefix,
        timeout_seconds=service.replay_store_timeout_seconds,
    )


class _MetricsListener(uvicorn.Server):
    """The metrics listener's server: the main listener owns the signals and stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, slots=True)
class SimulatedTee:
    """The simulator behind a simulated provider, and where its public verification material
    (root CA and collateral; nothing secret) was written for clients."""

    simulator: Simulator
    bundle_dir: Path | None


class EnclaveServer:
    """Everything the service runs, built from settings. Use inside one event loop."""

    def __init__(
        self,
        settings: EnclaveSettings,
        *,
        provider: QuoteProvider | None = None,
        simulator: Simulator | None = None,
        gpu_provider: GpuProvider | None = None,
    ) -> None:
        self.settings = settings
        service_settings = settings.service
        self.service = Service(settings)
        #: The key broker the OHTTP keys come from (replicas), or None: generated here.
        self.key_source = _key_source(settings)
        self.key_store = KeyStore(generate_default_key_configs() if self.key_source is None else ())
        self._keys_generated = time.time()
        self.replay_store = _shared_replay_store(settings)
        self.gateway = OhttpGateway(
            self.key_store,
            limits=settings.gateway,
            observer=GatewayMetrics(self.service.metrics),
            replay_store=self.replay_store,
        )
        self.simulated: SimulatedTee | None = None
        if provider is None:
            if service_settings.tee == "simulated":
                tee = development.load("insecure_allow_simulated_tee")
                if simulator is None:
                    simulator = tee.Simulator.create()
                self.simulated = SimulatedTee(simulator, self._write_simulated_bundle(simulator))
                provider = tee.SimulatedQuoteProvider(simulator)
            else:
                provider = detect_provider(service_settings.tee)
        self.provider = provider
        if gpu_provider is None:
            if service_settings.gpu == "simulated":
                gpu = development.load("insecure_allow_simulated_gpu")
                simulated_gpus = gpu.GpuSimulator(count=service_settings.simulated_gpu_count)
                gpu_provider = gpu.SimulatedGpuProvider(simulated_gpus)
            else:
                gpu_provider = make_gpu_provider(service_settings.gpu)
        self.gpu_provider = gpu_provider
        if gpu_provider is not None and gpu_provider.name == "simulated":
            self._write_simulated_gpu_root(cast("SimulatedGpuProvider", gpu_provider))

        self.receipts = ReceiptIssuer(self._current_certificate)
        self.service.receipts = self.receipts

        async def quote(report_data: bytes) -> bytes:
            return (await self.provider.get_quote(report_data)).quote

        self.certificates = CertificateManager(
            RaTlsIssuer(
                quote,
                lifetime=datetime.timedelta(seconds=service_settings.certificate_lifetime_seconds),
                include_model_digest_extension=service_settings.emit_model_digest_extension,
                gpu_provider=gpu_provider,
                insecure=self.service.insecure,
                receipt_key=self.receipts.claim,
            ),
            ohttp_keys=self.key_store.ohttp_keys,
            model=lambda: model_claim(self.service.manager.status()),
            service_version=__version__,
            on_reissue=self.service.metrics.certificate_reissued,
        )
        report = ReportSource(
            self.certificates,
            self.provider,
            self.key_store.ohttp_keys,
            self.service.manager.status,
            __version__,
            self.service.metrics.observe_quote_generation,
            on_outcome=self.service.metrics.operations.report,
        )
        limiter = RateLimiter(
            service_settings.report_rate_per_client_per_minute,
            service_settings.report_rate_global_per_minute,
            service_settings.report_rate_relayed_per_peer_per_minute,
            service_settings.report_rate_relayed_global_per_minute,
            rare=service_settings.report_rate_rare_per_minute,
        )
        gpus_limiter = RateLimiter(
            service_settings.gpus_rate_per_client_per_minute,
            service_settings.gpus_rate_global_per_minute,
            service_settings.gpus_rate_per_client_per_minute,
            service_settings.gpus_rate_global_per_minute,
        )
        #: Data-plane worker processes (1: this process serves the port itself).
        self.workers = data_plane_workers(service_settings)
        self.pool: WorkerPool | None = None
        self._stop: asyncio.Event | None = None
        self._reserved: list[socket.socket] = []
        self.app: Starlette = build_app(
            self.service,
            extra_routes=[
                *gateway_routes(self.gateway),
                *report_routes(report, limiter, gpus_limiter),
            ],
            observe=self.workers == 1,  # with workers, the worker that took it counts it
        )
        self.gateway.set_app(self.app)
        self.service.readiness_checks.append(
            lambda: None if self.certificates.current is not None else "not_attested"
        )
        self.service.readiness_checks.append(
            lambda: None if self.key_store.key_ids else "ohttp_key_unavailable"
        )
        self._claimed_model: ModelClaim | None = None
        self.service.manager.add_hook(self._on_transition)
        # After the certificate hook: a transition's push names the certificate it led to.
        self.pusher = StatusPusher(
            settings.model_manager,
            self.service.manager.status,
            envelope=self._push_envelope,
            observer=self.service.metrics.status_push,
        )
        self.service.manager.add_hook(self.pusher.on_transition)
        operations = self.service.metrics.operations
        operations.set_build_info(version=__version__, tee=self.provider.name)
        operations.track_certificate(self._certificate_validity)
        operations.track_ohttp_keys(lambda: self._keys_generated)
        self._tasks: list[asyncio.Task[None]] = []
        #: The connection limits, max_connections fitted to RLIMIT_NOFILE (a warning if lowered;
        #: ValueError, so no start, if not even one connection fits).
        self.limits = fit_to_descriptor_limit(self.connection_limits())
        self.uvicorn: GuardedServer | None = None
        #: The metrics listener's port once bound (``metrics_port``; None when off).
        self.metrics_port: int | None = None

    def _write_simulated_bundle(self, simulator: Simulator) -> Path | None:
        directory = self.settings.model_manager.run_dir / "simulated-tee"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "root_ca.der").write_bytes(simulator.root_ca_der)
            (directory / "root_ca.pem").write_bytes(simulator.root_ca_pem)
            (directory / "collateral.json").write_text(simulator.collateral_json())
        except OSError as exc:
            logger.warning("could not write the simulated TEE's root and collateral: %s", exc)
            return None
        logger.warning("SIMULATED TEE: its root CA and collateral are in %s", directory)
        return directory

    def _write_simulated_gpu_root(self, provider: SimulatedGpuProvider) -> None:
        path = self.settings.model_manager.run_dir / "simulated-gpu" / "root_ca.pem"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(provider.simulator.root_pem)
        except OSError as exc:
            logger.warning("could not write the simulated GPU's root: %s", exc)
            return
        logger.warning("SIMULATED GPU: its root CA is in %s", path)

    async def _on_transition(self, status: ModelStatus) -> None:
        claim = model_claim(status)
        if claim == self._claimed_model or self.certificates.current is None:
            return
        self._claimed_model = claim
        await self.certificates.reissue("model_change")

    def _current_certificate(self) -> tuple[bytes, bytes] | None:
        """SHA-256 of the current certificate's quote (what a receipt names), and its DER."""
        current = self.certificates.current
        if current is None:
            return None
        return hashlib.sha256(current.evidence.quote).digest(), current.certificate_der

    def _certificate_validity(self) -> tuple[float, float] | None:
        current = self.certificates.current
        if current is None:
            return None
        return current.not_before.timestamp(), current.not_after.timestamp()

    def _push_envelope(self) -> dict[str, object]:
        current = self.certificates.current
        digest = None if current is None else hashlib.sha256(current.certificate_der).hexdigest()
        return {"certificate_sha256": digest, "service_version": __version__}

    async def rotate_keys(self) -> None:
        """Activate fresh OHTTP keys, keep the old ones accepted for the overlap, reissue."""
        retired = self.key_store.active_configs
        self.key_store.rotate_defaults()
        self._keys_generated = time.time()
        await self.certificates.reissue("key_rotation")
        logger.info("OHTTP keys rotated; %d old key IDs accepted during the overlap", len(retired))
        self._tasks.append(asyncio.create_task(self._forget_later([c.key_id for c in retired])))

    async def _forget_later(self, key_ids: list[int]) -> None:
        await asyncio.sleep(self.settings.service.ohttp_key_overlap_seconds)
        for key_id in key_ids:
            with contextlib.suppress(Exception):
                self.key_store.remove(key_id)
        if self.pool is not None:
            self.pool.push_keys()

    async def _rotation_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.service.ohttp_key_rotation_seconds)
            try:
                await self.rotate_keys()
            except Exception as exc:  # keep serving the current keys; try again next period
                logger.error("OHTTP key rotation failed: %s", type(exc).__name__)

    async def _fetch_broker_keys(self) -> bool:
        """Fetch the key broker's generations and hold exactly them; reissue the certificate
        when they changed. False while no key has been released."""
        source = self.key_source
        if source is None:
            return True
        try:
            generations = await source.fetch()
        except KeyUnavailableError as exc:
            held = bool(self.key_store.key_ids)
            logger.error(
                "OHTTP key from %s unavailable: %s; %s",
                source.name,
                exc,
                "keeping the keys held"
                if held
                else "OHTTP is refused (503 ohttp_key_unavailable) until it is released",
            )
            return held
        if apply_generations(self.key_store, generations):
            self._keys_generated = time.time()
            logger.info(
                "OHTTP keys from %s: key IDs %s advertised, %s accepted",
                source.name,
                [config.key_id for config in self.key_store.active_configs],
                sorted(self.key_store.key_ids),
            )
            if self.certificates.current is not None:
                await self.certificates.reissue("key_rotation")
        return True

    async def _broker_loop(self) -> None:
        refresh = self.settings.service.ohttp_key_refresh_seconds
        while True:
            await asyncio.sleep(refresh if self.key_store.key_ids else min(5.0, refresh))
            try:
                await self._fetch_broker_keys()
            except Exception as exc:  # keep serving what is held; try again next period
                logger.error("OHTTP key refresh failed: %s", type(exc).__name__)

    async def start_background(self) -> None:
        """Fetch the broker's keys (if any), issue the first certificate and start the
        refresh and rotation loops."""
        await self._fetch_broker_keys()
        await self.certificates.reissue("start")
        self.certificates.start()
        await self._check_replay_store()
        if self.key_source is None:
            self._tasks.append(asyncio.create_task(self._rotation_loop()))
        else:  # the broker rotates: every replica follows its generations
            self._tasks.append(asyncio.create_task(self._broker_loop()))
        await self.pusher.start()

    async def _check_replay_store(self) -> None:
        """Say at start whether the shared replay store answers (requests are refused while
        it does not; nothing here makes the service accept one unchecked)."""
        store = self.replay_store
        if not isinstance(store, RedisReplayStore):
            return
        try:
            await store.ping()
        except ReplayStoreUnavailableError:
            logger.error(
                "the shared replay store %s does not answer: OHTTP requests are refused (503 "
                "replay_store_unavailable) until it does",
                store.where,
            )
        else:
            logger.info("shared replay store: %s", store.where)

    async def stop_background(self) -> None:
        if self.replay_store is not None:
            await self.replay_store.aclose()
        await self.pusher.aclose()
        await self.certificates.aclose()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def uvicorn_config(self) -> uvicorn.Config:
        settings = self.settings.service
        body_limits = BodyLimits(
            body_limit_bytes=settings.body_limit_bytes,
            timeout_seconds=settings.body_timeout_seconds,
            budget_bytes=settings.body_memory_budget_bytes,
        )
        config = uvicorn.Config(
            BodyGuard(self.app, body_limits),
            host=settings.host,
            port=settings.port,
            http="httptools",  # the protocol enclave.net adds its deadlines to
            lifespan="on",
            log_config=None,
            access_log=False,  # request lines carry paths and client addresses; metrics suffice
            server_header=False,
        )
        config.load()
        config.ssl = self.certificates.ssl_context  # the live RA-TLS context, reissued in place
        return config

    def connection_limits(self) -> ConnectionLimits:
        settings = self.settings.service
        return ConnectionLimits(
            max_connections=settings.max_connections,
            max_per_address=settings.max_connections_per_address,
            max_per_prefix=settings.max_connections_per_prefix,
            reserved_for_light_peers=min(
                settings.connections_reserved_for_light_peers, settings.max_connections // 8
            ),
            light_peer_connections=settings.light_peer_connections,
            handshake_timeout_seconds=settings.tls_handshake_timeout_seconds,
            header_timeout_seconds=settings.header_timeout_seconds,
            keep_alive_timeout_seconds=settings.keep_alive_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
        )

    @property
    def bound_port(self) -> int | None:
        """The TCP port the service listens on (useful with ``port=0``)."""
        if self.pool is not None:
            return int(self._reserved[0].getsockname()[1])
        server = self.uvicorn
        if server is None or not server.started:
            return None
        return server.bound_port

    def _bind_metrics_listener(self) -> tuple[_MetricsListener, socket.socket] | None:
        """The metrics listener (plain HTTP, ``metrics_host:metrics_port``), bound now so that
        an address in use fails the start; None when ``metrics_port`` is unset."""
        settings = self.settings.service
        if settings.metrics_port is None:
            return None
        family = socket.AF_INET6 if ":" in settings.metrics_host else socket.AF_INET
        sock = socket.create_server((settings.metrics_host, settings.metrics_port), family=family)
        self.metrics_port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            build_metrics_app(self.service),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            limit_concurrency=16,
            timeout_keep_alive=5,
        )
        logger.info(
            "metrics listener on %s:%d (%s)",
            settings.metrics_host,
            self.metrics_port,
            "bearer token required" if settings.metrics_token is not None else "no token",
        )
        return _MetricsListener(config), sock

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`request_shutdown`); then drain and stop."""
        if self.workers > 1:
            await self._serve_with_workers()
            return
        metrics = self._bind_metrics_listener()
        await self.start_background()
        self.uvicorn = GuardedServer(
            self.uvicorn_config(),
            limits=self.limits,
            grace_seconds=self.settings.service.shutdown_grace_seconds,
            on_grace_over=self.service.end_streams,
        )
        listener = None
        if metrics is not None:
            listener = asyncio.create_task(metrics[0].serve(sockets=[metrics[1]]))
        try:
            await self.uvicorn.serve()
        finally:
            if metrics is not None and listener is not None:
                metrics[0].should_exit = True
                with contextlib.suppress(Exception):
                    await listener
                metrics[1].close()
            await self.stop_background()

    def request_shutdown(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        if self._stop is not None:
            self._stop.set()

    # -- data-plane workers (docs/service.md, "More than one core") ----------------------------

    async def _serve_with_workers(self) -> None:
        """The owner: hold the port (bound, not listening: the workers listen on it with
        ``SO_REUSEPORT``), start the service and the workers, push every change to them, and
        on SIGTERM/SIGINT let each drain as the single process does, then stop the engine."""
        from enclave.workers import WorkerPool

        settings = self.settings.service
        try:
            self._reserved = bind_sockets(
                settings.host, settings.port, 0, reuse_port=True, listen=False
            )
        except OSError as exc:
            logger.error("cannot listen on %s port %d: %s", settings.host, settings.port, exc)
            sys.exit(STARTUP_FAILURE)
        port = int(self._reserved[0].getsockname()[1])
        metrics = self._bind_metrics_listener()
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        listener = None
        await self.service.start()  # what the app's lifespan does in one process
        try:
            await self.start_background()
            pool = WorkerPool(self, self.workers, port)
            self.certificates.listeners.append(pool.push_certificate)
            self.service.manager.add_hook(pool.push_status)
            self.service.exposition = pool.exposition
            await pool.start()
            self.pool = pool
            logger.info(
                "listening on %s port %d with %d data-plane workers",
                settings.host,
                port,
                self.workers,
            )
            if metrics is not None:
                listener = asyncio.create_task(metrics[0].serve(sockets=[metrics[1]]))
            await self._stop.wait()
            logger.info(
                "shutting down: the workers drain open requests for %.1f s",
                settings.shutdown_grace_seconds,
            )
            await pool.stop(settings.shutdown_grace_seconds + STREAM_END_SECONDS)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if metrics is not None:
                metrics[0].should_exit = True
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener
                metrics[1].close()
            await self.stop_background()
            await self.service.aclose()
            for sock in self._reserved:
                sock.close()
