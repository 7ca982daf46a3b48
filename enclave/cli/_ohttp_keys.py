"""``enclave ohttp-keys new|next|promote|retire|show FILE``: the replicas' shared OHTTP key
document (docs/operations.md, "Replicas"), for the operator to upload to the key broker.

The file holds secret seeds: it is written with mode 0600 (atomically), its seeds are never
printed, and it belongs in the KBS (``kbs-client ... set-resource``), not next to the image.
A rotation is three uploads, each after every replica has refetched the previous one
(``ohttp_key_refresh_seconds``): ``next`` (a new key, accepted but not advertised), ``promote``
(the new key advertised, the old one still accepted), ``retire`` (the old one gone, after
clients' cached configurations have expired). ``show`` prints the key IDs, their states and the
SHA-256 of the ``/.well-known/ohttp-keys`` bytes the replicas will serve.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import secrets
import sys
from pathlib import Path

from enclave.keybroker import (
    SEED_BYTES,
    KeyGeneration,
    KeyUnavailableError,
    State,
    apply_generations,
    encode_key_document,
    parse_key_document,
)
from enclave.protocol.ohttp import KeyStore

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ohttp-keys",
        help="create and rotate the replicas' shared OHTTP key document (for the key broker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION")
    parser.set_defaults(handler=lambda _args: _usage(parser))
    helps = {
        "new": "write a new document with one current key (refuses to overwrite)",
        "next": "add the next key: accepted by every replica, not advertised yet",
        "promote": "advertise the next key; the current one stays accepted as previous",
        "retire": "remove the previous key (the overlap is over)",
        "show": "print key IDs, states and the SHA-256 of the served key configurations",
    }
    for name, text in helps.items():
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("file", metavar="FILE", help="the key document (JSON)")
        action.set_defaults(handler=_run)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fresh(key_ids: tuple[int, int], state: State) -> KeyGeneration:
    return KeyGeneration(key_ids, secrets.token_bytes(SEED_BYTES), state)


def _free_ids(generations: list[KeyGeneration]) -> tuple[int, int]:
    held = {key_id for g in generations for key_id in g.key_ids}
    start = (max(held) + 1) if held else 1
    found = [i % 256 for i in range(start, start + 256) if i % 256 not in held][:2]
    return found[0], found[1]


def _write(path: Path, generations: list[KeyGeneration]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(encode_key_document(generations))
    os.replace(temporary, path)


def _show(generations: list[KeyGeneration]) -> None:
    store = KeyStore()
    apply_generations(store, generations)
    for generation in generations:
        ids = ", ".join(str(key_id) for key_id in generation.key_ids)
        sys.stdout.write(f"{generation.state:<9} key IDs {ids} (X-Wing, X25519)\n")
    digest = hashlib.sha256(store.ohttp_keys()).hexdigest()
    sys.stdout.write(f"ohttp-keys sha256 {digest}\n")


def _run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    action = args.keys_action
    if action == "new":
        if path.exists():
            sys.stderr.write(f"error: {path} exists; new never overwrites a key document\n")
            return 2
        generations = [_fresh((1, 2), "current")]
        _write(path, generations)
        _show(generations)
        return 0
    try:
        generations = list(parse_key_document(path.read_bytes()))
    except OSError as exc:
        sys.stderr.write(f"error: cannot read {path}: {exc.strerror}\n")
        return 2
    except KeyUnavailableError as exc:
        sys.stderr.write(f"error: {path} is not a key document: {exc}\n")
        return 2
    states = [g.state for g in generations]
    if action == "next":
        if "next" in states:
            sys.stderr.write("error: there is a next key already; promote it first\n")
            return 1
        generations.append(_fresh(_free_ids(generations), "next"))
    elif action == "promote":
        if "next" not in states:
            sys.stderr.write("error: no next key to promote; add one with next\n")
            return 1
        if "previous" in states:
            sys.stderr.write("error: a previous key is still held; retire it first\n")
            return 1
        renamed: dict[str, State] = {"current": "previous", "next": "current"}
        generations = [dataclasses.replace(g, state=renamed[g.state]) for g in generations]
    elif action == "retire":
        if "previous" not in states:
            sys.stderr.write("error: no previous key to retire\n")
            return 1
        generations = [g for g in generations if g.state != "previous"]
    if action != "show":
        _write(path, generations)
    _show(generations)
    return 0
