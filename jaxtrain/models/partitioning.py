"""Logical axis names on parameters: how a model says which of its dimensions may be split.

A model names the dimensions of its parameters with *logical* axes (``embed``, ``mlp``,
``heads``, ``kv``, ``vocab``), the way Flax's ``nn.with_logical_partitioning``, MaxText and
Levanter do; rules elsewhere (:mod:`jaxtrain.train.mesh`) map those names onto the axes of a
device mesh. Annotate an initializer with :func:`logical`::

    nn.Dense(features, kernel_init=logical(nn.initializers.lecun_normal(), "embed", "mlp"))

Parameters stay plain arrays: the initializer returns Flax's ``LogicallyPartitioned`` box only
while :func:`logical_axes` collects the names (an abstract ``init``, no arrays made), so the
train state, checkpoints, transfer and sweeps never see a box, and an annotated model's
parameters are bitwise those of the same model unannotated.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Logical axis names the built-in models use (the rules in train/mesh.py map them).
EMBED, MLP, HEADS, KV, VOCAB = "embed", "mlp", "heads", "kv", "vocab"

_COLLECTING = contextvars.ContextVar("jaxtrain_collecting_logical_axes", default=False)


def logical(init: Callable[..., Any], *names: str | None) -> Callable[..., Any]:
    """``init`` whose result carries the logical axis ``names`` (one per dimension, None for
    a dimension never split) while :func:`logical_axes` collects them; plain ``init``
    otherwise (same arrays, same random numbers)."""
    boxed = nn.with_logical_partitioning(init, tuple(names))

    def initializer(*args, **kwargs):
        return boxed(*args, **kwargs) if _COLLECTING.get() else init(*args, **kwargs)

    return initializer


@contextlib.contextmanager
def _collecting() -> Iterator[None]:
    token = _COLLECTING.set(True)
    try:
        yield
    finally:
        _COLLECTING.reset(token)


def logical_axes(
    model: nn.Module, input_shape: Sequence[int], input_dtype: Any = jnp.float32
) -> dict[str, tuple[str | None, ...]]:
    """``{path: names}`` for every annotated parameter of ``model`` (``path`` as
    ``jax.tree_util.keystr`` writes it for the ``params`` collection, e.g.
    ``"['block_0']['attn']['qkv']['kernel']"``); unannotated parameters are absent.

    Runs ``model.init`` abstractly (``jax.eval_shape``) for inputs
    ``input_dtype[1, *input_shape]`` (integer dtypes as int32, as :func:`make_init` does).
    A wrapper that is not a Flax module but holds one as ``base`` (transfer learning's LoRA
    and frozen-parameter models) is looked through: its base's parameters keep their paths
    in the wrapper's tree, and what it adds (LoRA's adapters) is unannotated."""
    while not isinstance(model, nn.Module) and hasattr(model, "base"):
        model = model.base
    integer = jnp.issubdtype(jnp.dtype(input_dtype), jnp.integer)
    dummy = jax.ShapeDtypeStruct((1, *input_shape), jnp.int32 if integer else jnp.float32)

    def init(x):
        return model.init({"params": jax.random.key(0)}, x, train=False)["params"]

    with _collecting():
        boxed = jax.eval_shape(init, dummy)
    found = jax.tree_util.tree_leaves_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )
    return {
        jax.tree_util.keystr(path): tuple(box.names)
        for path, box in found
        if isinstance(box, nn.LogicallyPartitioned)
    }


__all__ = ["EMBED", "HEADS", "KV", "MLP", "VOCAB", "logical", "logical_axes"]
