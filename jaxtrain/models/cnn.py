"""A small convolutional network for small images (8x8 to 32x32)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax


class CNN(nn.Module):
    """Conv blocks ``conv -> [batch norm] -> relu -> 2x2 max-pool`` then ``dense -> logits``.

    Input ``x: f32[batch, height, width, channels]``; output ``f32[batch, num_classes]``.
    Pooling is skipped once the feature map is smaller than 2x2. With ``batch_norm`` the
    running statistics live in the ``batch_stats`` collection (updated when ``train``); with
    ``axis_name`` (under ``pmap``) the batch statistics are averaged over that device axis.
    """

    features: Sequence[int]
    num_classes: int
    kernel_size: int = 3
    dense: int = 128
    dropout: float = 0.0
    batch_norm: bool = False
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"CNN expects images [batch, height, width, channels], got {x.shape}")
        for width in self.features:
            x = nn.Conv(width, (self.kernel_size, self.kernel_size), use_bias=not self.batch_norm)(
                x
            )
            if self.batch_norm:
                x = nn.BatchNorm(
                    use_running_average=not train, momentum=0.9, axis_name=self.axis_name
                )(x)
            x = nn.relu(x)
            if x.shape[1] >= 2 and x.shape[2] >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.dense)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
