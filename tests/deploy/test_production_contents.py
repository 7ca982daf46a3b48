"""Nothing fake ships (issue 13 part 3, issue 23 item 1): the production wheel, which the
container (Dockerfile) and the CVM image (deploy/image: build-image.sh builds it,
mkosi.postinst installs it) are made of, holds no module that can sign as a simulated root or
answer as an engine, whatever its name (the wheel's Python files are read, not listed); the
Docker build context leaves the development package out too; and the production wheel still
serves, refusing the simulated TEE and the development engine with an error that says why."""

from __future__ import annotations

import ast
import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy._repo import ROOT

FAKE_PARTS = ("enclave_dev/",)
#: What an engine answers with: the OpenAI objects it builds, and the routes it serves.
_ENGINE_OBJECTS = frozenset({"chat.completion", "chat.completion.chunk", "text_completion"})
_ENGINE_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


def fake_capabilities(path: str, source: str) -> list[str]:
    """What the module ``source`` can do that only a fake may: issue CA certificates (a
    ``BasicConstraints`` whose ``ca`` is not the constant False: a simulated root or
    intermediate), build an engine's OpenAI answer (a dict whose ``"object"`` is a completion),
    or serve an engine's route table (a ``Route`` on an OpenAI path)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "BasicConstraints":
                ca = [k.value for k in node.keywords if k.arg == "ca"] or node.args[:1]
                if not (ca and isinstance(ca[0], ast.Constant) and ca[0].value is False):
                    found.append(f"{path}:{node.lineno} issues CA certificates")
            if (
                name == "Route"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in _ENGINE_ROUTES
            ):
                found.append(f"{path}:{node.lineno} serves an engine route")
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "object"
                    and isinstance(value, ast.Constant)
                    and value.value in _ENGINE_OBJECTS
                ):
                    found.append(f"{path}:{node.lineno} answers as an engine")
    return found


def _wheel_capabilities(wheel: Path) -> list[str]:
    found = []
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith(".py"):
                found += fake_capabilities(name, archive.read(name).decode())
    return found


_PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation")
_NO_CACHE = shutil.ignore_patterns("__pycache__")


def _context_entries() -> tuple[list[str], list[str]]:
    """(admitted, excluded) patterns of .dockerignore ('*' first, then '!' entries)."""
    admitted, excluded = [], []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        (admitted if line.startswith("!") else excluded).append(line.lstrip("!").rstrip("/"))
    return admitted, excluded


def _docker_context(into: Path) -> Path:
    """A copy of what the Docker build context admits (.dockerignore's rules, in order)."""
    admitted, excluded = _context_entries()
    for entry in admitted:
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(source, into / entry, ignore=_NO_CACHE)
        else:
            shutil.copy2(source, into / entry)
    for pattern in excluded:
        for path in sorted(into.rglob("*")):
            relative = path.relative_to(into).as_posix()
            if path.exists() and pattern != "*" and fnmatch.fnmatch(relative, pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return into


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = _docker_context(tmp_path_factory.mktemp("context"))
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [*_PIP_WHEEL, "--wheel-dir", str(out), str(context)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("enclave_inference-*.whl")
    return built


def test_the_docker_context_leaves_the_fake_parts_out(tmp_path: Path) -> None:
    context = _docker_context(tmp_path)
    assert (context / "model_manager" / "lifecycle.py").is_file()
    for part in FAKE_PARTS:
        assert not (context / part).exists(), part


def test_the_production_wheel_holds_no_fake_part(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "enclave/server.py" in names
    assert "model_manager/lifecycle.py" in names
    assert [name for name in names if name.startswith(FAKE_PARTS)] == []
    assert _wheel_capabilities(wheel) == []
    (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "\nName: enclave-inference\n" in text  # issue 20 #13: not PyPI's unrelated `enclave`


def test_the_wheel_leaves_them_out_even_from_a_full_checkout(tmp_path: Path) -> None:
    """pyproject.toml excludes them itself, so a wheel built from the repository (as
    deploy/image/build-image.sh does) holds neither either."""
    subprocess.run(
        [*_PIP_WHEEL, "--wheel-dir", str(tmp_path / "out"), str(_full_copy(tmp_path / "src"))],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = (tmp_path / "out").glob("enclave_inference-*.whl")
    names = zipfile.ZipFile(built).namelist()
    assert [name for name in names if name.startswith(FAKE_PARTS)] == []
    assert _wheel_capabilities(built) == []


def test_the_scan_finds_each_fake_in_the_source_tree() -> None:
    """The content scan is not blind: run on the development package, it finds the TDX
    simulator's and the GPU simulator's roots and the development engine's answers."""
    found = [
        hit
        for path in sorted((ROOT / "enclave_dev").rglob("*.py"))
        for hit in fake_capabilities(str(path.relative_to(ROOT)), path.read_text())
    ]
    kinds = {(hit.split(":")[0], hit.split(" ", 1)[1]) for hit in found}
    assert ("enclave_dev/tee/_pki.py", "issues CA certificates") in kinds
    assert ("enclave_dev/gpu/_simulator.py", "issues CA certificates") in kinds
    assert ("enclave_dev/engine/_shapes.py", "answers as an engine") in kinds
    assert ("enclave_dev/engine/_app.py", "serves an engine route") in kinds


def _full_copy(into: Path) -> Path:
    into.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, into / name)
    for package in ("enclave", "attestation", "model_manager", "enclave_dev"):
        shutil.copytree(
            ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return into


def _installed(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
    return into


# As in a production environment: the unpacked wheel first on the path, and no finder of an
# editable install of the repository (this machine's development install has one).
_BOOTSTRAP = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
mode, target, *rest = sys.argv[1:]
sys.argv = [target, *rest]
if mode == "-c":
    exec(target)
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def _run_installed(site: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, "-P", "-c", _BOOTSTRAP, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_production_wheel_refuses_the_fake_parts_clearly(wheel: Path, tmp_path: Path) -> None:
    site = _installed(wheel, tmp_path / "site")
    probe = _run_installed(
        site,
        "-c",
        "import enclave.server, enclave.cli, importlib.util as u;print(u.find_spec('enclave_dev'))",
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["None"]

    simulated = _run_installed(
        site,
        "-m",
        "enclave",
        "serve",
        "--tee",
        "simulated",
        "--insecure-allow-simulated-tee",
        cwd=tmp_path,
    )
    assert simulated.returncode == 2
    assert "this is a production install" in simulated.stderr
    assert "Traceback" not in simulated.stderr

    dev_engine = _run_installed(
        site,
        "-m",
        "enclave",
        "serve",
        "--engine-command",
        "python3 -m enclave_dev.engine",
        "--insecure-dev-engine",
        cwd=tmp_path,
    )
    assert dev_engine.returncode == 2
    assert "not part of this installation" in dev_engine.stderr
    assert "Traceback" not in dev_engine.stderr

    demo = _run_installed(site, "-m", "enclave", "demo", cwd=tmp_path)
    assert demo.returncode == 2
    assert "pip install -e '.[dev]'" in demo.stderr
