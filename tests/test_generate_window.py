"""Generation beyond the context: the window slides; an empty prompt is a clear error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain.models.transformer import TransformerLM, generate

MAX_LEN = 16


@pytest.fixture(scope="module")
def lm():
    model = TransformerLM(d_model=16, num_heads=2, num_layers=1, max_len=MAX_LEN)
    params = jax.jit(lambda t: model.init(jax.random.key(1), t)["params"])(
        jnp.zeros((1, 4), jnp.int32)
    )
    return model, params


def _windows(prompt_len: int, new: int) -> list[int]:
    """The documented rule, restated: for each generated position, where its context starts.
    keep = max_len // 2; a round reads the last ``keep`` tokens (all while shorter) and
    generates until ``max_len`` tokens are in the window."""
    keep, length, starts = MAX_LEN // 2, prompt_len, []
    while len(starts) < new:
        start = length - keep if length > keep else 0
        count = min(MAX_LEN - (length - start), new - len(starts))
        starts += [start] * count
        length += count
    return starts


@pytest.mark.parametrize("prompt_len", [3, 40])  # shorter, longer than the context
def test_greedy_sliding_generation_equals_full_forward_over_each_window(lm, prompt_len) -> None:
    model, params = lm
    new = 30  # past max_len in every case
    prompt = jax.random.randint(jax.random.key(prompt_len), (1, prompt_len), 0, 256, jnp.int32)
    out = generate(model, params, prompt, jax.random.key(0), max_new_tokens=new, temperature=0.0)
    assert out.shape == (1, prompt_len + new)
    np.testing.assert_array_equal(out[:, :prompt_len], prompt)
    tokens = np.asarray(out[0])
    # The full forward pass, no cache; windows padded on the right to one shape (the model
    # is causal: the padding cannot reach the position read).
    forward = jax.jit(lambda t: model.apply({"params": params}, t))
    for i, start in enumerate(_windows(prompt_len, new)):
        position = prompt_len + i
        window = tokens[start:position]
        assert 1 <= len(window) <= MAX_LEN - 1
        padded = np.zeros((1, MAX_LEN), np.int32)
        padded[0, : len(window)] = window
        logits = forward(jnp.asarray(padded))[0, len(window) - 1]
        assert int(jnp.argmax(logits)) == tokens[position], f"token {position}"


def test_sliding_returns_every_new_tokens_logits(lm) -> None:
    model, params = lm
    prompt = jnp.arange(5, dtype=jnp.int32)[None, :]
    out, logits = generate(model, params, prompt, jax.random.key(0), max_new_tokens=25,
                           temperature=0.0, return_logits=True)  # fmt: skip
    assert logits.shape == (1, 25, 256)
    np.testing.assert_array_equal(np.argmax(logits[0], axis=-1), out[0, 5:])
    with pytest.raises(ValueError, match="exceeds the model's max_len"):
        generate(model, params, prompt, jax.random.key(0), max_new_tokens=25, slide=False)


def test_an_empty_prompt_is_a_clear_error(tmp_path, capsys) -> None:
    from jaxtrain.cli import main

    (tmp_path / "config.yaml").write_text(
        "name: lm\ndata: {name: pydoc_text, sequence_length: 16}\nmodel: {name: transformer_lm}\n"
    )
    assert main(["generate", str(tmp_path), "--prompt", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--prompt is empty" in err
