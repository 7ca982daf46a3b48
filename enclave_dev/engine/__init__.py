"""The development engine: a faithful fake of vLLM's OpenAI server. It is NOT a language model.

Run it as ``python -m enclave_dev.engine serve <model-dir> --served-model-name <name>
(--uds <path> | --host H --port P) [vLLM flags] [--dev-* flags]`` (docs/model-lifecycle.md).

Output rule (what :func:`expected_completion` computes): for a prompt text ``P`` (the last
user message of a chat, the prompt of a completion) the tokens are ``"Echo:"``, then
``" " + sha256(P)[:8 hex]``, then ``" " + w`` for each whitespace-separated word ``w`` of
``P``; then one end-of-sequence token with no text, which ``completion_tokens`` counts (as
vLLM counts EOS). ``max_tokens`` cuts the list (``finish_reason`` ``"length"``); a ``stop``
string cuts the text before it (``"stop"``, ``stop_reason`` = the string); ``ignore_eos``
repeats the sequence up to ``max_tokens``. ``prompt_tokens`` is the number of
whitespace-separated words of the prompt (for a chat: of all message texts).

Tool calls (chat, ``tools`` given, ``tool_choice`` not ``"none"``): a named tool_choice calls
that tool; otherwise the first tool whose name occurs in the last user message
(case-insensitive) is called, and ``"required"`` falls back to the first tool. Arguments are
``{"<first required parameter, else first property, else 'input'>": "<the last user message,
whitespace-normalised>"}``. ``"auto"`` needs ``--enable-auto-tool-choice``.

Embeddings: :func:`expected_embedding` (unit norm, 384 dimensions by default).
"""

from enclave_dev.engine._config import NOT_A_LANGUAGE_MODEL
from enclave_dev.engine._faults import Faults
from enclave_dev.engine._generate import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    expected_completion,
    expected_embedding,
    prompt_tag,
    prompt_token_count,
)

__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "NOT_A_LANGUAGE_MODEL",
    "Faults",
    "expected_completion",
    "expected_embedding",
    "prompt_tag",
    "prompt_token_count",
]
