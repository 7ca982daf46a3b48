"""The gateway's private keys by key ID, the configs it serves, and rotation with overlap."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

from enclave.protocol._keyconfig import KeyConfig, SymmetricAlgorithms, encode_key_configs
from enclave.protocol.errors import UnknownKeyIdError
from enclave.protocol.hpke import AeadId, KdfId, KemId, KemPrivateKey, get_kem

__all__ = [
    "DEFAULT_X25519_SYMMETRIC",
    "DEFAULT_XWING_SYMMETRIC",
    "GatewayKey",
    "KeyStore",
    "generate_default_key_configs",
    "generate_key",
]

DEFAULT_XWING_SYMMETRIC = (
    SymmetricAlgorithms(KdfId.HKDF_SHA256, AeadId.AES_256_GCM),
    SymmetricAlgorithms(KdfId.HKDF_SHA256, AeadId.CHACHA20_POLY1305),
)
DEFAULT_X25519_SYMMETRIC = (
    SymmetricAlgorithms(KdfId.HKDF_SHA256, AeadId.AES_128_GCM),
    SymmetricAlgorithms(KdfId.HKDF_SHA256, AeadId.AES_256_GCM),
    SymmetricAlgorithms(KdfId.HKDF_SHA256, AeadId.CHACHA20_POLY1305),
)
_DEFAULT_LAYOUT = (
    (KemId.X_WING, DEFAULT_XWING_SYMMETRIC),
    (KemId.DHKEM_X25519_HKDF_SHA256, DEFAULT_X25519_SYMMETRIC),
)


@dataclass(frozen=True, slots=True)
class GatewayKey:
    """A private key together with the public configuration that advertises it."""

    config: KeyConfig
    private_key: KemPrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if self.private_key.kem_id != self.config.kem_id:
            raise ValueError("private key and key configuration use different KEMs")
        if self.private_key.public_key_bytes() != self.config.public_key:
            raise ValueError("private key does not match the configuration's public key")


def generate_key(
    key_id: int, kem_id: KemId, symmetric: tuple[SymmetricAlgorithms, ...]
) -> GatewayKey:
    """A fresh key pair for ``kem_id`` with its configuration."""
    private_key = get_kem(kem_id).generate_private_key()
    config = KeyConfig(key_id, kem_id, private_key.public_key_bytes(), symmetric)
    return GatewayKey(config, private_key)


def generate_default_key_configs(key_ids: tuple[int, int] = (1, 2)) -> tuple[GatewayKey, ...]:
    """The DESIGN.md defaults, freshly generated: X-Wing (HKDF-SHA256; AES-256-GCM,
    ChaCha20-Poly1305) first, then DHKEM(X25519, HKDF-SHA256) (HKDF-SHA256; AES-128-GCM,
    AES-256-GCM, ChaCha20-Poly1305)."""
    if len(key_ids) != len(_DEFAULT_LAYOUT) or len(set(key_ids)) != len(key_ids):
        raise ValueError("the default key configurations need two distinct key IDs")
    return tuple(
        generate_key(key_id, kem_id, symmetric)
        for key_id, (kem_id, symmetric) in zip(key_ids, _DEFAULT_LAYOUT, strict=True)
    )


@dataclass(frozen=True, slots=True)
class _State:
    keys: MappingProxyType[int, GatewayKey]
    active: tuple[int, ...]
    served: bytes


def _state(keys: dict[int, GatewayKey], active: tuple[int, ...]) -> _State:
    served = encode_key_configs([keys[key_id].config for key_id in active])
    return _State(MappingProxyType(keys), active, served)


class KeyStore:
    """Private keys by key ID.

    *Active* keys are advertised in :meth:`ohttp_keys` and accepted; *retired* keys are no
    longer advertised but still accepted, so clients holding the previous configuration keep
    working during a rotation's overlap; :meth:`remove` ends the overlap. Reads are lock-free
    (each change swaps in a new immutable state); changes are serialized by a lock.
    """

    __slots__ = ("_lock", "_next_id", "_state")

    def __init__(self, keys: Iterable[GatewayKey] = ()) -> None:
        self._lock = threading.Lock()
        self._state = _state({}, ())
        self._next_id = 0
        for key in keys:
            self.add(key)

    def add(self, key: GatewayKey) -> None:
        """Add an active key. Raises ``ValueError`` if its key ID is already held."""
        with self._lock:
            self._add_locked((key,), retire=())

    def lookup(self, key_id: int) -> GatewayKey:
        """The key (active or retired) for ``key_id``; ``UnknownKeyIdError`` if none."""
        key = self._state.keys.get(key_id)
        if key is None:
            raise UnknownKeyIdError(key_id)
        return key

    def retire(self, key_id: int) -> None:
        """Stop advertising ``key_id`` but keep accepting it."""
        with self._lock:
            state = self._state
            if key_id not in state.keys:
                raise UnknownKeyIdError(key_id)
            active = tuple(held for held in state.active if held != key_id)
            self._state = _state(dict(state.keys), active)

    def remove(self, key_id: int) -> None:
        """Forget ``key_id`` entirely: requests to it then fail with ``UnknownKeyIdError``."""
        with self._lock:
            state = self._state
            if key_id not in state.keys:
                raise UnknownKeyIdError(key_id)
            keys = {held: key for held, key in state.keys.items() if held != key_id}
            self._state = _state(keys, tuple(held for held in state.active if held != key_id))

    def rotate(self, new_keys: Iterable[GatewayKey]) -> tuple[int, ...]:
        """Activate ``new_keys`` and retire every key active before; return the retired IDs."""
        new_keys = tuple(new_keys)
        if not new_keys:
            raise ValueError("a rotation needs at least one new key")
        with self._lock:
            retired = self._state.active
            self._add_locked(new_keys, retire=retired)
            return retired

    def rotate_defaults(self) -> tuple[GatewayKey, ...]:
        """Generate fresh default keys under unused key IDs and :meth:`rotate` to them."""
        with self._lock:
            first, second = self._free_ids_locked(2)
            fresh = generate_default_key_configs((first, second))
            self._add_locked(fresh, retire=self._state.active)
        return fresh

    def replace(self, active: Iterable[GatewayKey], accepted: Iterable[GatewayKey]) -> bool:
        """Hold exactly ``active`` and ``accepted`` keys, advertising ``active`` in order (a
        key broker's generations). A held key whose configuration is unchanged stays as it
        is. True if anything changed."""
        active, accepted = tuple(active), tuple(accepted)
        with self._lock:
            state = self._state
            keys: dict[int, GatewayKey] = {}
            for key in (*active, *accepted):
                key_id = key.config.key_id
                if key_id in keys and keys[key_id].config != key.config:
                    raise ValueError(f"two different keys for key ID {key_id}")
                held = state.keys.get(key_id)
                keys[key_id] = held if held is not None and held.config == key.config else key
            order = tuple(key.config.key_id for key in active)
            if len(set(order)) != len(order):
                raise ValueError("an active key ID is listed twice")
            same = order == state.active and {
                key_id: key.config for key_id, key in keys.items()
            } == {key_id: key.config for key_id, key in state.keys.items()}
            if same:
                return False
            self._state = _state(keys, order)
            if keys:
                self._next_id = (max(keys) + 1) % 256
            return True

    def free_key_ids(self, count: int) -> tuple[int, ...]:
        """``count`` key IDs not held now, taken round-robin so a removed ID is reused last."""
        with self._lock:
            return self._free_ids_locked(count)

    @property
    def active_configs(self) -> tuple[KeyConfig, ...]:
        state = self._state
        return tuple(state.keys[key_id].config for key_id in state.active)

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(self._state.keys)

    @property
    def retired_key_ids(self) -> tuple[int, ...]:
        state = self._state
        return tuple(key_id for key_id in state.keys if key_id not in state.active)

    def ohttp_keys(self) -> bytes:
        """The exact ``application/ohttp-keys`` bytes to serve: the active configs, in order."""
        return self._state.served

    def _add_locked(self, new_keys: tuple[GatewayKey, ...], retire: tuple[int, ...]) -> None:
        state = self._state
        keys = dict(state.keys)
        for key in new_keys:
            key_id = key.config.key_id
            if key_id in keys:
                raise ValueError(f"key ID {key_id} is already held")
            keys[key_id] = key
        active = tuple(held for held in state.active if held not in retire)
        active += tuple(key.config.key_id for key in new_keys)
        self._state = _state(keys, active)
        self._next_id = (max(key.config.key_id for key in new_keys) + 1) % 256

    def _free_ids_locked(self, count: int) -> tuple[int, ...]:
        held = self._state.keys
        if count < 0 or count > 256 - len(held):
            raise ValueError(f"cannot find {count} free key IDs")
        found: list[int] = []
        candidate = self._next_id
        while len(found) < count:
            if candidate not in held:
                found.append(candidate)
            candidate = (candidate + 1) % 256
        return tuple(found)
