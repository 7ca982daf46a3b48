from model_manager._progress import MAX_FROM_LOGS, ProgressParser

# Real-format vLLM lines (format "%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s").
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
    assert values[2] == 0.05  # "Starting to load model"
    assert values[4:9] == [0.05, 0.2375, 0.425, 0.6125, 0.8]
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
    assert parser.feed("Loading pt checkpoint shards:  50% Completed | 1/2 [00:03<00:03]") > 0.4


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
