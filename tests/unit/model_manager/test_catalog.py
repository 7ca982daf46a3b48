import os
from pathlib import Path

import pytest

from model_manager.catalog import Catalog, ModelSpec, validate_model_name
from model_manager.errors import CatalogError, InvalidModelNameError, UnknownModelError

BAD_NAMES = [
    "",
    ".",
    "..",
    "...",
    "a..b",
    "../etc",
    "a/b",
    "/abs",
    "a\\b",
    "-lead",
    "_lead",
    ".hidden",
    "trailing.",
    "sp ace",
    "tab\t",
    "nul\x00",
    "new\nline",
    "caf\u00e9",
    "\uff41",  # fullwidth a
    "a" * 129,
    "name:tag",
    "a*",
    "~user",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_before_any_file_access(name: str, tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "does-not-exist")
    with pytest.raises(InvalidModelNameError):
        catalog.resolve(name)


@pytest.mark.parametrize("value", [None, 3, b"tiny", ["tiny"]])
def test_non_string_names_are_refused(value: object) -> None:
    with pytest.raises(InvalidModelNameError):
        validate_model_name(value)


@pytest.mark.parametrize("name", ["a", "tiny", "Llama-3.1-8B_Instruct", "q.w.e", "9", "a" * 128])
def test_good_names_pass(name: str) -> None:
    assert validate_model_name(name) == name


def test_model_without_entry_is_its_directory_with_defaults(models_dir: Path) -> None:
    spec = Catalog(models_dir).resolve("tiny")
    assert spec == ModelSpec(name="tiny", path=(models_dir / "tiny").resolve())
    assert spec.engine_args() == []


def test_unknown_model(models_dir: Path) -> None:
    with pytest.raises(UnknownModelError):
        Catalog(models_dir).resolve("absent")


def test_a_file_is_not_a_model(models_dir: Path) -> None:
    (models_dir / "afile").write_text("x")
    with pytest.raises(UnknownModelError):
        Catalog(models_dir).resolve("afile")


def test_catalog_entry_gives_directory_and_engine_args(models_dir: Path) -> None:
    (models_dir / "tiny" / "chat.jinja").write_text("{{ messages }}")
    (models_dir / "models.toml").write_text(
        """
[models.chat]
path = "tiny"
tensor_parallel_size = 2
max_model_len = 4096
gpu_memory_utilization = 0.85
dtype = "bfloat16"
quantization = "fp8"
tool_call_parser = "llama3_json"
chat_template = "chat.jinja"
extra_args = ["--enable-prefix-caching", "--max-num-seqs=64"]
"""
    )
    spec = Catalog(models_dir).resolve("chat")
    assert spec.path == (models_dir / "tiny").resolve()
    assert spec.engine_args() == [
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "4096",
        "--gpu-memory-utilization",
        "0.85",
        "--dtype",
        "bfloat16",
        "--quantization",
        "fp8",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "llama3_json",
        "--chat-template",
        str((models_dir / "tiny" / "chat.jinja").resolve()),
        "--enable-prefix-caching",
        "--max-num-seqs=64",
    ]
    assert Catalog(models_dir).names() == ["chat", "other", "tiny"]


def test_symlinked_model_escaping_models_dir_is_refused(models_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, models_dir / "sneaky")
    with pytest.raises(CatalogError):
        Catalog(models_dir).resolve("sneaky")


def test_symlink_inside_models_dir_is_followed(models_dir: Path) -> None:
    os.symlink(models_dir / "tiny", models_dir / "alias")
    assert Catalog(models_dir).resolve("alias").path == (models_dir / "tiny").resolve()


@pytest.mark.parametrize("path", ["../outside", "/etc", ".", "tiny/../.."])
def test_catalog_path_escaping_models_dir_is_refused(
    models_dir: Path, tmp_path: Path, path: str
) -> None:
    (tmp_path / "outside").mkdir()
    (models_dir / "models.toml").write_text(f'[models.evil]\npath = "{path}"\n')
    with pytest.raises(CatalogError):
        Catalog(models_dir).resolve("evil")


def test_chat_template_escaping_is_refused(models_dir: Path) -> None:
    (models_dir / "models.toml").write_text(
        '[models.tiny]\nchat_template = "../../../etc/passwd"\n'
    )
    with pytest.raises(CatalogError):
        Catalog(models_dir).resolve("tiny")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("this is not toml [", "models.toml is not valid TOML: "),
        ("[models.tiny]\nunknown_key = 1\n", "[models.tiny] unknown key 'unknown_key'"),
        ("[models.tiny]\ntensor_parallel_size = 0\n", "[models.tiny] tensor_parallel_size: "),
        ("[models.tiny]\ngpu_memory_utilization = 1.5\n", "gpu_memory_utilization: "),
        ('[models.tiny]\ndtype = "bf16; rm -rf /"\n', "[models.tiny] dtype: "),
        ("[other]\nx = 1\n", "unknown top-level key 'other'"),
        ('[models.tiny]\nextra_args = ["--host", "0.0.0.0"]\n', "extra_args: --host is not"),
        ('[models.tiny]\nextra_args = ["--port=9000"]\n', "extra_args: --port is not"),
        ('[models.tiny]\nextra_args = ["--enable-log-requests"]\n', "--enable-log-requests"),
        ('[models.tiny]\nextra_args = ["--served-model-name", "x"]\n', "--served-model-name"),
        ("models = 3\n", "'models' must be a table"),
        ("[models]\ntiny = 3\n", "[models.tiny] must be a table"),
    ],
)
def test_invalid_catalog_is_refused_saying_what_and_where(
    models_dir: Path, text: str, says: str
) -> None:
    (models_dir / "models.toml").write_text(text)
    with pytest.raises(CatalogError) as caught:
        Catalog(models_dir).resolve("tiny")
    assert says in str(caught.value)


def test_broken_toml_names_the_line_and_column(models_dir: Path) -> None:
    (models_dir / "models.toml").write_text("[models.tiny]\nmax_model_len = 8192\ndtype = \n")
    with pytest.raises(CatalogError, match=r"at line 3, column 9"):
        Catalog(models_dir).resolve("tiny")


def test_one_bad_entry_blocks_only_itself(models_dir: Path) -> None:
    (models_dir / "models.toml").write_text(
        '[models.broken]\npath = "tiny"\ntensor_paralel_size = 2\n'
        '[models.forbidden]\npath = "tiny"\nextra_args = ["--port", "1"]\n'
        '[models."../up"]\npath = "tiny"\n'
        "[models.tiny]\nmax_model_len = 64\n"
    )
    catalog = Catalog(models_dir)
    assert catalog.resolve("tiny").max_model_len == 64
    assert catalog.resolve("other").name == "other"  # a directory without an entry
    with pytest.raises(CatalogError, match=r"\[models.broken\] unknown key 'tensor_paralel_size'"):
        catalog.resolve("broken")
    with pytest.raises(CatalogError, match=r"\[models.forbidden\] extra_args: --port"):
        catalog.resolve("forbidden")
    verdicts = {check.name: check for check in catalog.check()}
    assert not verdicts["broken"].ok
    assert not verdicts["forbidden"].ok
    assert "invalid model name" in str(verdicts["../up"].problem)
    assert verdicts["tiny"].ok
    assert verdicts["tiny"].declared
    assert verdicts["other"].ok
    assert not verdicts["other"].declared


def test_check_reports_a_declared_entry_without_its_directory(models_dir: Path) -> None:
    (models_dir / "models.toml").write_text('[models.ghost]\npath = "nowhere"\n')
    (verdict,) = [c for c in Catalog(models_dir).check() if c.name == "ghost"]
    assert verdict.problem == "[models.ghost] no directory 'nowhere' under the models directory"


def test_catalog_that_is_not_utf8_is_refused(models_dir: Path) -> None:
    (models_dir / "models.toml").write_bytes(b"\xff\xfe[models]")
    with pytest.raises(CatalogError):
        Catalog(models_dir).resolve("tiny")


def test_missing_models_dir(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        Catalog(tmp_path / "nope").resolve("tiny")
