"""The model catalog: validated names resolved to directories under the models directory.

``<models-dir>/models.toml`` is optional. Each ``[models.<name>]`` table declares a model::

    [models.llama-3-8b]
    path = "llama-3-8b-instruct"     # relative to models-dir; default: the name
    tensor_parallel_size = 2
    max_model_len = 8192
    gpu_memory_utilization = 0.9
    dtype = "bfloat16"
    quantization = "fp8"
    tool_call_parser = "llama3_json"
    chat_template = "templates/llama3.jinja"   # relative to the model directory
    extra_args = ["--enable-prefix-caching"]

A model without an entry is the directory ``<models-dir>/<name>`` with vLLM's defaults. Names
are validated before any file-system access; resolved paths (symlinks followed) must stay
inside the models directory.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_manager.errors import CatalogError, InvalidModelNameError, UnknownModelError

__all__ = [
    "CATALOG_FILE",
    "FORBIDDEN_EXTRA_ARGS",
    "MAX_MODEL_NAME_LENGTH",
    "Catalog",
    "ModelSpec",
    "validate_model_name",
]

CATALOG_FILE = "models.toml"
MAX_MODEL_NAME_LENGTH = 128
#: Largest catalog file read, in bytes.
MAX_CATALOG_BYTES = 1 << 20
#: Engine flags the catalog may not set: the supervisor owns the listening address and the
#: served name, and request logging would write prompts into the engine's output.
FORBIDDEN_EXTRA_ARGS = frozenset(
    {
        "--host",
        "--port",
        "--uds",
        "--served-model-name",
        "--model",
        "--enable-log-requests",
        "--enable-log-outputs",
    }
)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_model_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise InvalidModelNameError.

    Valid: ASCII letters, digits, ``.``, ``_``, ``-``; starts with a letter or digit; at most
    128 characters; no ``..``; not ending in ``.``. No file system is touched.
    """
    if not isinstance(name, str):
        raise InvalidModelNameError("model name must be a string")
    if not name or len(name) > MAX_MODEL_NAME_LENGTH:
        raise InvalidModelNameError("model name must be 1 to 128 characters")
    if _NAME_RE.fullmatch(name) is None:
        raise InvalidModelNameError(
            "model name may hold only ASCII letters, digits, '.', '_' and '-', "
            "and must start with a letter or digit"
        )
    if ".." in name or name.endswith("."):
        raise InvalidModelNameError("model name may not contain '..' or end with '.'")
    return name


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A resolved model: its name, real directory and vLLM arguments."""

    name: str
    path: Path
    tensor_parallel_size: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    dtype: str | None = None
    quantization: str | None = None
    tool_call_parser: str | None = None
    chat_template: Path | None = None
    extra_args: tuple[str, ...] = ()

    def engine_args(self) -> list[str]:
        """The vLLM arguments this entry adds after ``serve <dir> --served-model-name <name>``."""
        args: list[str] = []
        if self.tensor_parallel_size is not None:
            args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.gpu_memory_utilization is not None:
            args += ["--gpu-memory-utilization", repr(self.gpu_memory_utilization)]
        if self.dtype is not None:
            args += ["--dtype", self.dtype]
        if self.quantization is not None:
            args += ["--quantization", self.quantization]
        if self.tool_call_parser is not None:
            args += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        if self.chat_template is not None:
            args += ["--chat-template", str(self.chat_template)]
        return args + list(self.extra_args)


_Word = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._:+/=-]+$")]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, min_length=1, max_length=4096)
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=1024)
    max_model_len: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    dtype: _Word | None = None
    quantization: _Word | None = None
    tool_call_parser: _Word | None = None
    chat_template: str | None = Field(default=None, min_length=1, max_length=4096)
    extra_args: tuple[Annotated[str, Field(max_length=4096)], ...] = ()


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, _Entry] = Field(default_factory=dict)


class Catalog:
    """Resolves model names under ``models_dir``; re-reads ``models.toml`` on each lookup."""

    def __init__(self, models_dir: Path) -> None:
        self._models_dir = models_dir

    @property
    def models_dir(self) -> Path:
        return self._models_dir

    def resolve(self, name: str) -> ModelSpec:
        """Validate ``name`` and return its spec; UnknownModelError if there is no such model."""
        validate_model_name(name)
        root = self._root()
        entry = self._entries(root).get(name, _Entry())
        path = _inside(root, root / (entry.path if entry.path is not None else name), "model")
        if not path.is_dir():
            raise UnknownModelError(f"no model named {name!r}")
        template = None
        if entry.chat_template is not None:
            template = _inside(root, path / entry.chat_template, "chat template")
            if not template.is_file():
                raise CatalogError(f"chat template of {name!r} is not a file")
        return ModelSpec(
            name=name,
            path=path,
            tensor_parallel_size=entry.tensor_parallel_size,
            max_model_len=entry.max_model_len,
            gpu_memory_utilization=entry.gpu_memory_utilization,
            dtype=entry.dtype,
            quantization=entry.quantization,
            tool_call_parser=entry.tool_call_parser,
            chat_template=template,
            extra_args=entry.extra_args,
        )

    def names(self) -> list[str]:
        """Every model name the catalog declares or finds as a directory, sorted."""
        root = self._root()
        found = set(self._entries(root))
        for child in root.iterdir():
            try:
                name = validate_model_name(child.name)
            except InvalidModelNameError:
                continue
            if child.is_dir():
                found.add(name)
        return sorted(found)

    def _root(self) -> Path:
        try:
            return self._models_dir.resolve(strict=True)
        except OSError as exc:
            raise CatalogError("models directory does not exist") from exc

    def _entries(self, root: Path) -> dict[str, _Entry]:
        file = root / CATALOG_FILE
        try:
            with file.open("rb") as handle:
                raw = handle.read(MAX_CATALOG_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CatalogError(f"{CATALOG_FILE} cannot be read") from exc
        if len(raw) > MAX_CATALOG_BYTES:
            raise CatalogError(f"{CATALOG_FILE} is larger than {MAX_CATALOG_BYTES} bytes")
        try:
            parsed = _CatalogFile.model_validate(tomllib.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise CatalogError(f"{CATALOG_FILE} is not valid TOML") from exc
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, err["loc"])) for err in exc.errors())
            raise CatalogError(f"{CATALOG_FILE} has invalid entries: {fields}") from exc
        for name, entry in parsed.models.items():
            try:
                validate_model_name(name)
            except InvalidModelNameError as exc:
                raise CatalogError(f"{CATALOG_FILE} declares an invalid model name") from exc
            for arg in entry.extra_args:
                flag = arg.split("=", 1)[0]
                if flag in FORBIDDEN_EXTRA_ARGS:
                    raise CatalogError(f"{CATALOG_FILE}: extra_args of {name!r} sets {flag}")
        return parsed.models


def _inside(root: Path, candidate: Path, what: str) -> Path:
    """Resolve ``candidate`` (symlinks followed) and require it to stay under ``root``."""
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:
        raise CatalogError(f"{what} path cannot be resolved") from exc
    if resolved == root or not resolved.is_relative_to(root):
        raise CatalogError(f"{what} path escapes the models directory")
    return resolved
