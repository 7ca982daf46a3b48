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
    "EntryCheck",
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


@dataclass(frozen=True, slots=True)
class EntryCheck:
    """One model's verdict from :meth:`Catalog.check`: its spec, or what is wrong with it."""

    name: str
    declared: bool
    spec: ModelSpec | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


class Catalog:
    """Resolves model names under ``models_dir``; re-reads ``models.toml`` on each lookup.

    A problem with the file as a whole (unreadable, too large, not TOML, a table other than
    ``[models.NAME]``) blocks every model; a problem with one entry blocks only that model. Each
    :class:`CatalogError` says which entry and what is wrong (the operator's own configuration,
    never request content).
    """

    def __init__(self, models_dir: Path) -> None:
        self._models_dir = models_dir

    @property
    def models_dir(self) -> Path:
        return self._models_dir

    def resolve(self, name: str) -> ModelSpec:
        """Validate ``name`` and return its spec; UnknownModelError if there is no such model,
        CatalogError (naming the entry and the problem) if its entry or the file is invalid."""
        validate_model_name(name)
        root = self._root()
        raw = self._tables(root).get(name)
        if raw is None:
            return self._spec(root, name, _Entry(), declared=False)
        return self._spec(root, name, _entry(name, raw))

    def names(self) -> list[str]:
        """Every model name the catalog declares or finds as a directory, sorted."""
        root = self._root()
        found = {name for name in self._tables(root) if _valid_name(name)}
        for child in root.iterdir():
            if _valid_name(child.name) and child.is_dir():
                found.add(child.name)
        return sorted(found)

    def check(self) -> list[EntryCheck]:
        """Every declared entry and every model directory, each resolved or with its problem.
        Raises CatalogError for a problem of the file as a whole."""
        root = self._root()
        tables = self._tables(root)
        results = []
        for name, raw in sorted(tables.items()):
            try:
                if not _valid_name(name):
                    raise CatalogError(f"[models.{name!r}]: invalid model name")
                results.append(
                    EntryCheck(name, True, self._spec(root, name, _entry(name, raw)), None)
                )
            except CatalogError as exc:
                results.append(EntryCheck(name, True, None, str(exc)))
        for child in sorted(root.iterdir()):
            if child.name in tables or not _valid_name(child.name) or not child.is_dir():
                continue
            try:
                results.append(
                    EntryCheck(
                        child.name,
                        False,
                        self._spec(root, child.name, _Entry(), declared=False),
                        None,
                    )
                )
            except CatalogError as exc:
                results.append(EntryCheck(child.name, False, None, str(exc)))
        return results

    def _spec(self, root: Path, name: str, entry: _Entry, *, declared: bool = True) -> ModelSpec:
        where = f"[models.{name}]" if declared else f"model {name!r}:"
        path = _inside(
            root, root / (entry.path if entry.path is not None else name), f"{where} path"
        )
        if not path.is_dir():
            if declared:
                missing = entry.path if entry.path is not None else name
                raise CatalogError(f"{where} no directory {missing!r} under the models directory")
            raise UnknownModelError(f"no model named {name!r}")
        template = None
        if entry.chat_template is not None:
            template = _inside(root, path / entry.chat_template, f"{where} chat_template")
            if not template.is_file():
                raise CatalogError(f"{where} chat_template: {entry.chat_template!r} is not a file")
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

    def _root(self) -> Path:
        try:
            return self._models_dir.resolve(strict=True)
        except OSError as exc:
            raise CatalogError("the models directory does not exist") from exc

    def _tables(self, root: Path) -> dict[str, object]:
        """The raw ``[models.NAME]`` tables; CatalogError for a problem of the whole file."""
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
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CatalogError(f"{CATALOG_FILE} is not UTF-8 (byte {exc.start})") from exc
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # tomllib's message names the problem and its line and column, not the content.
            raise CatalogError(f"{CATALOG_FILE} is not valid TOML: {exc}") from exc
        extra = sorted(set(document) - {"models"})
        if extra:
            raise CatalogError(
                f"{CATALOG_FILE}: unknown top-level key {extra[0]!r}; models are declared as "
                "[models.NAME] tables"
            )
        models = document.get("models", {})
        if not isinstance(models, dict):
            raise CatalogError(f"{CATALOG_FILE}: 'models' must be a table of [models.NAME] tables")
        return models


def _valid_name(name: str) -> bool:
    try:
        validate_model_name(name)
    except InvalidModelNameError:
        return False
    return True


def _entry(name: str, raw: object) -> _Entry:
    """Validate one ``[models.NAME]`` table; CatalogError says which key and what is wrong."""
    where = f"[models.{name}]"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where} must be a table")
    try:
        entry = _Entry.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            key = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                problems.append(f"{key}: {error['msg']}")
        raise CatalogError(f"{where} " + "; ".join(problems)) from None
    for arg in entry.extra_args:
        flag = arg.split("=", 1)[0]
        if flag in FORBIDDEN_EXTRA_ARGS:
            raise CatalogError(
                f"{where} extra_args: {flag} is not allowed (the supervisor sets the address and "
                "served name; request logging would write prompts to the engine's output)"
            )
    return entry


def _inside(root: Path, candidate: Path, what: str) -> Path:
    """Resolve ``candidate`` (symlinks followed) and require it to stay under ``root``."""
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:
        raise CatalogError(f"{what} cannot be resolved") from exc
    if resolved == root or not resolved.is_relative_to(root):
        raise CatalogError(f"{what} escapes the models directory")
    return resolved
