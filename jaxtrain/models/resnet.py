"""A residual network for small images (8x8 to 32x32): basic blocks, standard or pre-activation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtrain.models.remat import rematerialised

_BN_MOMENTUM = 0.9  # as in CNN


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection.

    Standard (He et al. 2016a): ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.
    Pre-activation (He et al. 2016b): ``conv(relu(bn(conv(relu(bn(x)))))) + shortcut``, where
    the shortcut starts from the normalised input when it is a projection. The shortcut is the
    identity unless the stride or the width changes; then it is a 1x1 projection (followed by
    batch norm in the standard block).

    Input ``x: [batch, height, width, c]``; output ``[batch, ceil(height / strides),
    ceil(width / strides), features]``.
    """

    features: int
    strides: int = 1
    preact: bool = False
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = lambda f, k, s, name: nn.Conv(  # noqa: E731
            f, (k, k), (s, s), use_bias=False, dtype=self.dtype, name=name
        )
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train,
            momentum=_BN_MOMENTUM,
            dtype=self.dtype,
            axis_name=self.axis_name,
            name=name,
        )
        project = self.strides != 1 or x.shape[-1] != self.features
        if self.preact:
            h = nn.relu(norm("bn1")(x))
            shortcut = conv(self.features, 1, self.strides, "proj")(h) if project else x
            h = conv(self.features, 3, self.strides, "conv1")(h)
            h = nn.relu(norm("bn2")(h))
            h = conv(self.features, 3, 1, "conv2")(h)
            return h + shortcut
        h = conv(self.features, 3, self.strides, "conv1")(x)
        h = nn.relu(norm("bn1")(h))
        h = conv(self.features, 3, 1, "conv2")(h)
        h = norm("bn2")(h)
        shortcut = x
        if project:
            shortcut = norm("proj_bn")(conv(self.features, 1, self.strides, "proj")(x))
        return nn.relu(h + shortcut)


class ResNet(nn.Module):
    """Stem conv, stages of basic residual blocks, global average pool, dropout, dense head.

    Input ``x: f32[batch, height, width, channels]``; output ``f32[batch, num_classes]`` logits
    (always float32, whatever the compute ``dtype``).

    Stage ``i`` has ``stage_sizes[i]`` blocks of width ``features[i]``; its first block has
    stride 1 in the first stage and 2 in the others (so ``(2, 2)`` stages take 8x8 digits to a
    4x4 map, 32x32 images to 16x16). The stem is a 3x3 stride-1 convolution of width
    ``features[0]`` with no pooling, as suits small images. With ``preact`` the blocks are
    pre-activation blocks and a final ``batch norm -> relu`` precedes the pooling.

    Batch norm running statistics live in the ``batch_stats`` collection: they are updated
    when ``train`` (apply with ``mutable=["batch_stats"]``) and used, unchanged, otherwise.
    ``dtype`` is the compute dtype (``jnp.bfloat16`` say); parameters stay float32. With
    ``axis_name`` (under ``pmap``) batch statistics are averaged over that device axis; with
    ``remat`` each block's activations are recomputed in the backward pass.
    """

    stage_sizes: Sequence[int]
    features: Sequence[int]
    num_classes: int
    preact: bool = False
    dropout: float = 0.0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(
                f"ResNet expects images [batch, height, width, channels], got {x.shape}"
            )
        if len(self.stage_sizes) != len(self.features) or not self.stage_sizes:
            raise ValueError(
                "ResNet: stage_sizes and features need one entry per stage (and at least one "
                f"stage); got stage_sizes={tuple(self.stage_sizes)}, "
                f"features={tuple(self.features)}."
            )
        x = x.astype(self.dtype)
        x = nn.Conv(self.features[0], (3, 3), use_bias=False, dtype=self.dtype, name="stem_conv")(x)
        if not self.preact:
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=_BN_MOMENTUM,
                dtype=self.dtype,
                axis_name=self.axis_name,
                name="stem_bn",
            )(x)
            x = nn.relu(x)
        block_cls = rematerialised(BasicBlock) if self.remat else BasicBlock
        for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.features, strict=True)):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x_block = block_cls(
                    width,
                    strides,
                    self.preact,
                    self.dtype,
                    self.axis_name,
                    name=f"stage{stage}_block{block}",
                )
                x = x_block(x, train) if self.remat else x_block(x, train=train)
        if self.preact:
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=_BN_MOMENTUM,
                dtype=self.dtype,
                axis_name=self.axis_name,
                name="final_bn",
            )(x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)
