"""A Vision Transformer classifier for small images (8x8 digits up to 32x32)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.models.remat import rematerialised
from jaxtrain.models.transformer import NORMS, Dtype, TransformerBlock

POOLS = ("cls", "mean")


class ViT(nn.Module):
    """Patches -> linear embedding (+ learned positions) -> pre-norm encoder -> class logits.

    Input ``x: f32[batch, height, width, channels]`` with height and width divisible by
    ``patch_size``; output ``f32[batch, num_classes]``. ``pool="cls"`` prepends a learned CLS
    token and classifies its final state; ``pool="mean"`` averages the patch states. Blocks are
    ``TransformerBlock`` with ``causal=False``. Dropout is active only with ``train=True``
    (``rngs={"dropout": key}``). ``dtype`` is the compute dtype (parameters stay float32).
    """

    num_classes: int
    patch_size: int = 2
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4
    dropout: float = 0.0
    pool: str = "cls"
    norm: str = "layernorm"
    dtype: Dtype = jnp.float32
    remat: bool = False  # recompute each block's activations in the backward pass

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"ViT expects images [batch, height, width, channels], got {x.shape}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {self.norm!r}")
        batch, height, width, _ = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"image size {height}x{width} is not divisible by patch_size={p}; pick a patch"
                " size that divides both sides"
            )
        patches = nn.Conv(
            self.d_model, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="patch"
        )(x)
        tokens = patches.reshape((batch, -1, self.d_model))  # [batch, num_patches, d_model]
        if self.pool == "cls":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, self.d_model))
            cls = jnp.broadcast_to(cls.astype(tokens.dtype), (batch, 1, self.d_model))
            tokens = jnp.concatenate([cls, tokens], axis=1)
        pos = self.param(
            "pos_embed", nn.initializers.normal(stddev=0.02), (1, tokens.shape[1], self.d_model)
        )
        h = nn.Dropout(self.dropout, deterministic=not train)(tokens + pos.astype(tokens.dtype))
        block_cls = rematerialised(TransformerBlock) if self.remat else TransformerBlock
        for i in range(self.num_layers):
            block = block_cls(
                self.num_heads,
                self.mlp_ratio,
                self.dropout,
                causal=False,
                norm=self.norm,
                dtype=self.dtype,
                name=f"block_{i}",
            )
            h = block(h, train) if self.remat else block(h, train=train)
        h = NORMS[self.norm](dtype=self.dtype, name="norm_out")(h)
        pooled = h[:, 0] if self.pool == "cls" else h.mean(axis=1)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(pooled)
        return logits.astype(jnp.float32)


__all__ = ["ViT"]
