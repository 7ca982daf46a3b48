"""``enclave ohttp-keys``: new, next, promote, retire, show; the file is 0600, the seeds are
never printed, the order of a rotation is enforced, and every replica derives what show says."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import stat
from pathlib import Path

from enclave.cli import main
from enclave.keybroker import apply_generations, parse_key_document
from enclave.protocol.ohttp import KeyStore


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["ohttp-keys", *argv])
    return code, out.getvalue(), err.getvalue()


def states(path: Path) -> list[tuple[str, tuple[int, int]]]:
    return [(g.state, g.key_ids) for g in parse_key_document(path.read_bytes())]


def test_a_whole_rotation(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    code, out, _ = run("new", str(path))
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert states(path) == [("current", (1, 2))]
    for generation in json.loads(path.read_text())["keys"]:
        assert generation["seed"] not in out  # the seeds are never printed
    assert run("new", str(path))[0] == 2  # never overwrites
    assert run("promote", str(path))[0] == 1  # nothing to promote yet
    assert run("next", str(path))[0] == 0
    assert states(path) == [("current", (1, 2)), ("next", (3, 4))]
    assert run("next", str(path))[0] == 1
    code, out, _ = run("promote", str(path))
    assert code == 0
    assert states(path) == [("previous", (1, 2)), ("current", (3, 4))]
    store = KeyStore()
    apply_generations(store, parse_key_document(path.read_bytes()))
    assert f"ohttp-keys sha256 {hashlib.sha256(store.ohttp_keys()).hexdigest()}" in out
    assert run("next", str(path))[0] == 0
    assert run("promote", str(path))[0] == 1  # retire the previous one first
    assert run("retire", str(path))[0] == 0
    assert states(path) == [("current", (3, 4)), ("next", (5, 6))]
    assert run("retire", str(path))[0] == 1


def test_a_file_that_is_not_a_key_document(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"format": "other"}')
    code, _, err = run("show", str(path))
    assert code == 2
    assert "not a key document" in err
    seed = base64.b64encode(b"s" * 32).decode()
    assert seed not in err
    assert run("show", str(tmp_path / "missing.json"))[0] == 2
