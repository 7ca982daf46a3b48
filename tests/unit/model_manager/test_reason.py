"""The engine failure reason: which of the engine's lines may be shown (model_manager._reason)."""

from __future__ import annotations

from pathlib import Path

from model_manager._reason import REASON_MAX_CHARS, failure_reason

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "vllm"


def lines(name: str) -> list[str]:
    return (VECTORS / name).read_text().splitlines()


def test_real_vllm_refusing_max_model_len_says_why() -> None:
    reason = failure_reason(lines("load-refused-max-model-len.log"))
    assert reason is not None
    assert reason.startswith(
        "User-specified max_model_len (999999) is greater than the derived max_model_len "
        "(max_position_embeddings=2048.0"
    )
    assert len(reason) == REASON_MAX_CHARS
    assert reason.endswith("...")


def test_real_vllm_worker_failure_names_the_root_cause_not_the_wrappers() -> None:
    assert failure_reason(lines("load-refused-bad-weights.log")) == (
        "SafetensorError: Error while deserializing header: incomplete metadata, "
        "file not fully covered"
    )


def test_a_successful_load_has_no_reason() -> None:
    assert failure_reason(lines("load-cpu.log")) is None


def test_only_failure_lines_qualify() -> None:
    assert (
        failure_reason(
            [
                "(APIServer pid=1) INFO 12-03 10:19:49 [api_utils.py:286] non-default args: {}",
                "(APIServer pid=1) WARNING 12-03 10:19:49 [x.py:1] careful: ValueError: no",
                "Traceback (most recent call last):",
                '  File "/srv/secret/path.py", line 3, in <module>',
                "    raise ValueError(prompt)",
                "some tqdm bar: 50% | 1/2",
            ]
        )
        is None
    )


def test_an_error_log_line_is_a_reason_when_no_exception_follows() -> None:
    reason = failure_reason(
        ["(EngineCore pid=9) ERROR 12-03 10:23:21 [core.py:1510] Not enough memory for KV cache"]
    )
    assert reason == "Not enough memory for KV cache"


def test_paths_and_control_characters_are_removed() -> None:
    reason = failure_reason(
        ["OSError: \x1b[31mcannot open /models/tiny/model.safetensors\x1b[0m\x07 (errno 2)"]
    )
    assert reason == "OSError: cannot open <path> (errno 2)"


def test_generic_wrappers_lose_to_the_root_cause_but_are_kept_alone() -> None:
    wrapper = "RuntimeError: Engine core initialization failed. See root cause above. {}"
    assert failure_reason(["ValueError: the real cause", wrapper]) == "ValueError: the real cause"
    assert failure_reason([wrapper]) == wrapper
