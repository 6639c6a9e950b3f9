"""A small convolutional network for small images (8x8 to 32x32) and sequences (signals)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax


class CNN(nn.Module):
    """Conv blocks ``conv -> [batch norm] -> relu -> max-pool`` then ``dense -> logits``.

    Input ``x`` is a batch of images ``f32[batch, height, width, channels]`` (2-D convolutions
    ``kernel_size x kernel_size``, 2x2 pooling) or of sequences ``f32[batch, length,
    channels]`` or ``f32[batch, length]`` (one channel): 1-D convolutions of width
    ``kernel_size`` along the length, pooling by 2. Output ``f32[batch, num_classes]``.
    Pooling is skipped once a spatial axis is shorter than 2. With ``batch_norm`` the running
    statistics live in the ``batch_stats`` collection (updated when ``train``); with
    ``axis_name`` (under ``pmap``) the batch statistics are averaged over that device axis.
    """

    features: Sequence[int]
    num_classes: int
    kernel_size: int = 3
    dense: int = 128
    dropout: float = 0.0
    batch_norm: bool = False
    axis_name: str | None = None
    dtype: Any = None  # the compute dtype (train.precision); parameters stay float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if x.ndim == 2:  # sequences of one channel
            x = x[..., None]
        if x.ndim not in (3, 4):
            raise ValueError(
                "CNN expects images [batch, height, width, channels] or sequences [batch, "
                f"length(, channels)], got {x.shape}"
            )
        spatial = x.ndim - 2  # 1: sequences, 2: images
        for width in self.features:
            kernel = (self.kernel_size,) * spatial
            x = nn.Conv(width, kernel, use_bias=not self.batch_norm, dtype=self.dtype)(x)
            if self.batch_norm:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    axis_name=self.axis_name,
                    dtype=self.dtype,
                )(x)
            x = nn.relu(x)
            if all(size >= 2 for size in x.shape[1:-1]):
                x = nn.max_pool(x, (2,) * spatial, strides=(2,) * spatial)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.dense, dtype=self.dtype)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)
