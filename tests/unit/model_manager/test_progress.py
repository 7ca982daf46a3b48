from pathlib import Path

import pytest

from model_manager._progress import MAX_FROM_LOGS, SHARDS_DONE, SHARDS_START, ProgressParser

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "vllm"

# vLLM 0.32's GPU runner lines, from its format strings (vllm/v1/worker/gpu_model_runner.py,
# gpu_worker.py, v1/engine/core.py, entrypoints/launchers/api_server/entry.py); the CPU lines
# are recorded (tests/vectors/vllm/load-cpu.log).
GPU_032 = [
    "(APIServer pid=7) INFO 12-03 10:19:49 [api_utils.py:286] non-default args: {'model': 'x'}",
    "(APIServer pid=7) INFO 12-03 10:20:06 [model.py:733] Resolved architecture: LlamaForCausalLM",
    "(EngineCore pid=9) INFO 12-03 10:20:15 [core.py:133] Initializing a V1 LLM engine (v0.32.0) "
    "with config: model='/models/x'",
    "(Worker pid=11) INFO 12-03 10:20:27 [gpu_model_runner.py:5040] Starting to load model "
    "/models/x...",
    "Loading safetensors checkpoint shards:   0% Completed | 0/2 [00:00<?, ?it/s]",
    "Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:01<00:01,  1.02s/it]",
    "Loading safetensors checkpoint shards: 100% Completed | 2/2 [00:02<00:00,  1.01s/it]",
    "(Worker pid=11) INFO 12-03 10:20:29 [default_loader.py:502] Loading weights took 2.05 seconds",
    "(Worker pid=11) INFO 12-03 10:20:29 [gpu_model_runner.py:5150] Model loading took 14.99 GiB "
    "memory and 2.301234 seconds",
    "(Worker pid=11) INFO 12-03 10:20:35 [gpu_worker.py:760] Available KV cache memory: 58.2 GiB",
    "(EngineCore pid=9) INFO 12-03 10:20:35 [kv_cache_utils.py:2328] GPU KV cache size: 476,784 "
    "tokens, Maximum concurrency for 8,192 tokens per request: 58.20x",
    "(Worker pid=11) INFO 12-03 10:20:50 [gpu_model_runner.py:6582] Graph capturing finished in 15 "
    "secs, took 0.52 GiB",
    "(EngineCore pid=9) INFO 12-03 10:20:51 [core.py:396] init engine (profile, create kv cache, "
    "warmup model) took 36.10 s (compilation: 12.80 s)",
    "(APIServer pid=7) INFO 12-03 10:20:53 [entry.py:140] Starting vLLM server on "
    "unix:/run/enclave/vllm.sock",
    "INFO:     Application startup complete.",
]


def test_progress_moves_through_the_recorded_vllm_032_cpu_log() -> None:
    """Regression: the 0.11-era patterns missed "took 4.27 s", "Starting vLLM server on" and
    everything before the shards, so progress sat still for most of a real load."""
    parser = ProgressParser()
    lines = (VECTORS / "load-cpu.log").read_text().splitlines()
    values = [parser.feed(line) for line in lines]
    assert values == sorted(values)
    seen = sorted(set(values))
    assert seen == [0.0, 0.02, 0.04, 0.06, SHARDS_START, SHARDS_DONE, 0.78, 0.90, 0.95, 0.98]
    assert parser.value == MAX_FROM_LOGS


def test_progress_moves_through_the_vllm_032_gpu_runner_lines() -> None:
    parser = ProgressParser()
    values = [parser.feed(line) for line in GPU_032]
    assert values == sorted(values)
    assert values == [
        0.02, 0.04, 0.06, 0.1, 0.1, 0.4, 0.7, 0.7, 0.74, 0.78, 0.78, 0.86, 0.9, 0.95, 0.98
    ]  # fmt: skip


# Real-format vLLM 0.11 lines
# (format "%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s").
LOG = [
    "INFO 11-22 15:29:58 [__init__.py:216] Automatically detected platform cuda.",
    "(APIServer pid=4711) INFO 11-22 15:29:59 [api_server.py:1839] vLLM API server version 0.11.0",
    "(EngineCore_DP0 pid=4790) INFO 11-22 15:30:00 [gpu_model_runner.py:2602] Starting to load "
    "model /models/tiny...",
    "\x1b[1;36m(EngineCore_DP0 pid=4790)\x1b[0;0m INFO 11-22 15:30:00 [cuda.py:366] Using Flash "
    "Attention backend on V1 engine.",
    "Loading safetensors checkpoint shards:   0% Completed | 0/4 [00:00<?, ?it/s]",
    "Loading safetensors checkpoint shards:  25% Completed | 1/4 [00:00<00:02,  1.10it/s]",
    "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01,  1.98it/s]",
    "Loading safetensors checkpoint shards:  75% Completed | 3/4 [00:01<00:00,  2.10it/s]",
    "Loading safetensors checkpoint shards: 100% Completed | 4/4 [00:02<00:00,  2.01it/s]",
    "(EngineCore_DP0 pid=4790) INFO 11-22 15:30:01 [default_loader.py:262] Loading weights took "
    "1.23 seconds",
    "(EngineCore_DP0 pid=4790) INFO 11-22 15:30:02 [gpu_model_runner.py:2653] Model loading took "
    "14.99 GiB and 2.3 seconds",
    "(EngineCore_DP0 pid=4790) INFO 11-22 15:30:20 [core.py:210] init engine (profile, create kv "
    "cache, warmup model) took 20.10 seconds",
    "(APIServer pid=4711) INFO 11-22 15:30:21 [api_server.py:1634] Starting vLLM API server 0 on "
    "http://127.0.0.1:8001",
    "(APIServer pid=4711) INFO:     Application startup complete.",
]


def test_progress_rises_monotonically_through_a_real_log() -> None:
    parser = ProgressParser()
    values = [parser.feed(line) for line in LOG]
    assert values == sorted(values)
    assert values[0] == 0.0
    assert values[2] == SHARDS_START  # "Starting to load model"
    assert values[4:9] == pytest.approx([0.1, 0.25, 0.4, 0.55, 0.7])
    assert values[-1] == MAX_FROM_LOGS
    assert len(set(values)) >= 10


def test_logs_alone_never_reach_one() -> None:
    parser = ProgressParser()
    for line in LOG * 3:
        parser.feed(line)
    assert parser.value < 1.0
    parser.complete()
    assert parser.value == 1.0


def test_a_second_progress_bar_does_not_lower_the_value() -> None:
    parser = ProgressParser()
    parser.feed("Loading safetensors checkpoint shards: 100% Completed | 8/8 [00:09<00:00]")
    high = parser.value
    parser.feed("Loading safetensors checkpoint shards:   0% Completed | 0/2 [00:00<?, ?it/s]")
    parser.feed("Starting to load model /models/draft...")
    assert parser.value == high


def test_pt_checkpoint_shards_count_too() -> None:
    parser = ProgressParser()
    assert parser.feed("Loading pt checkpoint shards:  50% Completed | 1/2 [00:03<00:03]") >= 0.4


def test_nonsense_is_ignored() -> None:
    parser = ProgressParser()
    for line in [
        "Loading safetensors checkpoint shards: 100% Completed | 5/0 [",
        "Loading safetensors checkpoint shards: 100% Completed | 9/4 [",
        "user said: Loading weights took 3 seconds?",  # a milestone can only raise progress
        "",
        "\x00\xff",
    ]:
        parser.feed(line)
    assert 0.0 <= parser.value <= MAX_FROM_LOGS
