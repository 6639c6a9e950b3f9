"""Low-rank adapters (LoRA, Hu et al., 2021) on any Flax model's kernels, and their merge.

An adapted kernel ``W`` (viewed as a matrix ``[inputs, outputs]``) is used as
``W + (alpha / rank) * lora_a @ lora_b`` with ``lora_a: [inputs, rank]`` and
``lora_b: [rank, outputs]``. The adapters sit beside the kernel in the parameter tree
(``block_0/attn/qkv/lora_a``), so loading, freezing and checkpoints treat them as ordinary
parameters; :class:`LoRAModel` merges them into the kernels on every call, and
:func:`merge` does it once for export (the merged tree is the base model's).

The matrix view: all axes but the last are inputs (Dense ``[in, out]``, Conv ``[kh, kw,
in, out]``, the attention output ``[heads, head_dim, d_model]``), except kernels matching
``MULTI_OUTPUT`` whose outputs span several axes (``qkv``: ``[d_model, 3, heads,
head_dim]``: one input axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.transfer.errors import TransferError
from jaxtrain.transfer.paths import SEP, flatten, matches, unflatten

ADAPTERS = ("lora_a", "lora_b")
MULTI_OUTPUT = ("*qkv/kernel",)  # kernels with one input axis and several output axes


def input_axes(path: str, shape: tuple[int, ...]) -> int:
    """How many leading axes of the kernel at ``path`` are its inputs."""
    return 1 if matches(path, MULTI_OUTPUT) else len(shape) - 1


def targeted(params: Any, targets: tuple[str, ...]) -> list[str]:
    """Paths of the kernels (``.../kernel``, rank >= 2) that ``targets`` selects; a pattern
    selecting none is an error naming it."""
    kernels = {
        p: v for p, v in flatten(params).items() if p.endswith("kernel") and jnp.ndim(v) >= 2
    }
    chosen = [p for p in kernels if matches(p, targets)]
    for pattern in targets:
        if not any(matches(p, [pattern]) for p in kernels):
            raise TransferError(
                f"transfer.lora.targets: {pattern!r} matches no kernel of the model "
                f"(kernels: {', '.join(list(kernels)[:6])})"
            )
    return chosen


def add_adapters(params: Any, targets: tuple[str, ...], rank: int, key: jax.Array) -> Any:
    """``params`` plus ``lora_a`` (normal, std ``1/sqrt(inputs)``) and ``lora_b`` (zeros)
    beside every targeted kernel, so the adapted model starts equal to the base one."""
    flat = flatten(params)
    for i, path in enumerate(targeted(params, targets)):
        kernel = flat[path]
        split = input_axes(path, kernel.shape)
        fan_in = math.prod(kernel.shape[:split])
        fan_out = math.prod(kernel.shape[split:])
        module = path.rsplit(SEP, 1)[0]
        a = jax.random.normal(jax.random.fold_in(key, i), (fan_in, rank), kernel.dtype)
        flat[f"{module}{SEP}lora_a"] = a / jnp.sqrt(fan_in).astype(kernel.dtype)
        flat[f"{module}{SEP}lora_b"] = jnp.zeros((rank, fan_out), kernel.dtype)
    return unflatten(flat)


def merge(params: Any, alpha: float, rank: int) -> Any:
    """The base model's parameters: each adapted kernel plus ``alpha / rank * a @ b``,
    reshaped to the kernel; the adapters removed. Pure and jittable."""
    flat = flatten(params)
    merged = {}
    scale = alpha / rank
    for path, value in flat.items():
        module, _, leaf = path.rpartition(SEP)
        if leaf in ADAPTERS:
            continue
        a_path = f"{module}{SEP}lora_a" if module else "lora_a"
        if leaf == "kernel" and a_path in flat:
            b = flat[a_path.replace("lora_a", "lora_b")]
            delta = (flat[a_path] @ b).reshape(value.shape)
            value = value + (scale * delta).astype(value.dtype)
        merged[path] = value
    return unflatten(merged)


def is_adapter(path: str) -> bool:
    return path.rsplit(SEP, 1)[-1] in ADAPTERS


@dataclass(frozen=True)
class LoRAModel:
    """A Flax model with adapters: ``init``/``apply`` like the wrapped ``base`` (other
    attributes, e.g. ``max_len``, are the base's), its ``params`` holding the adapters too.
    ``apply`` merges them first (:func:`merge`), so gradients reach the adapters only
    through the merged kernels."""

    base: nn.Module
    targets: tuple[str, ...]
    rank: int
    alpha: float

    def init(self, rngs, *args, **kwargs) -> dict[str, Any]:
        variables = dict(self.base.init(rngs, *args, **kwargs))
        key = rngs["params"] if isinstance(rngs, dict) else rngs
        adapter_key = jax.random.fold_in(key, 0x10AA)
        variables["params"] = add_adapters(
            variables["params"], self.targets, self.rank, adapter_key
        )
        return variables

    def apply(self, variables, *args, **kwargs):
        merged = merge(variables["params"], self.alpha, self.rank)
        return self.base.apply({**variables, "params": merged}, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("base", "targets", "rank", "alpha"):
            raise AttributeError(name)
        return getattr(self.base, name)
