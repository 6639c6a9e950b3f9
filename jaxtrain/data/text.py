"""Byte-level text: tokens are UTF-8 bytes, so no tokenizer has to be downloaded.

``encode``/``decode`` map text to ``int32`` byte ids in ``[0, VOCAB_SIZE)`` and back, ``chunk``
cuts a token stream into training windows, ``pydoc_corpus`` is an English corpus that ships
with every CPython (the reference-manual topics behind ``help()``), and
``unigram_bits_per_byte`` is the baseline a language model has to beat.
"""

from __future__ import annotations

import functools

import numpy as np

VOCAB_SIZE = 256


def encode(text: str) -> np.ndarray:
    """``text`` as its UTF-8 bytes: ``int32[len(text.encode())]`` with values in [0, 256)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)


def decode(tokens: np.ndarray | list[int]) -> str:
    """Byte ids back to text; byte sequences that are not valid UTF-8 become U+FFFD."""
    tokens = np.asarray(tokens).reshape(-1)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= VOCAB_SIZE):
        raise ValueError(
            f"decode takes byte ids in [0, {VOCAB_SIZE}), got values from {tokens.min()} to"
            f" {tokens.max()}"
        )
    return tokens.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def chunk(tokens: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping windows ``int32[len(tokens) // length, length]``; the remainder is dropped.

    For next-token training take windows of ``seq_len + 1`` and use ``w[:, :-1]`` as inputs and
    ``w[:, 1:]`` as targets.
    """
    if length < 1:
        raise ValueError(f"chunk length must be a positive number of tokens, got {length}")
    tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
    n = len(tokens) // length
    return tokens[: n * length].reshape(n, length)


@functools.cache
def pydoc_corpus() -> str:
    """The Python reference documentation topics (``pydoc_data.topics.topics``) as one text.

    Topics are joined in sorted key order, separated by a blank line, so the text is the same
    on every run of a given Python version (about 0.5 MB of English for Python 3.11+).
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def unigram_bits_per_byte(train_tokens: np.ndarray, eval_tokens: np.ndarray) -> float:
    """Cross-entropy (bits per byte) on ``eval_tokens`` of an add-one unigram model fit on train.

    ``p(b) = (count_train(b) + 1) / (len(train) + 256)``; returns ``-mean(log2 p(eval))``.
    """
    train_tokens = np.asarray(train_tokens).reshape(-1)
    eval_tokens = np.asarray(eval_tokens).reshape(-1)
    if eval_tokens.size == 0:
        raise ValueError("unigram_bits_per_byte needs at least one evaluation token")
    counts = np.bincount(train_tokens, minlength=VOCAB_SIZE).astype(np.float64) + 1.0
    if counts.size != VOCAB_SIZE:
        raise ValueError(f"tokens must be byte ids in [0, {VOCAB_SIZE})")
    log2_p = np.log2(counts) - np.log2(counts.sum())
    return float(-log2_p[eval_tokens].mean())
