"""The route fuzzers use the route tests' harness: a real Service and app, a scripted engine."""

from tests.unit.enclave.routes.conftest import make_harness, make_settings, models_dir

__all__ = ["make_harness", "make_settings", "models_dir"]
