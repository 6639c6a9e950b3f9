"""Random augmentation inside the train step: pure functions of (inputs, key)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxtrain.config.schema import AugmentConfig

Augment = Callable[[jax.Array, jax.Array], jax.Array]


def flip_horizontal(images: jax.Array, key: jax.Array) -> jax.Array:
    """Mirror each image of ``f32[b, H, W, C]`` left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def random_crop(images: jax.Array, key: jax.Array, padding: int) -> jax.Array:
    """Zero-pad ``f32[b, H, W, C]`` by ``padding`` pixels per side, then cut each image back
    to H x W at a uniformly random offset (a shift of up to ``padding`` pixels)."""
    b, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def gaussian_noise(inputs: jax.Array, key: jax.Array, std: float) -> jax.Array:
    """``inputs + N(0, std^2)`` element-wise, in the inputs' dtype."""
    return inputs + std * jax.random.normal(key, inputs.shape, inputs.dtype)


def build_augment(config: AugmentConfig) -> Augment | None:
    """``augment(inputs, key) -> inputs`` for the configured transformations (in the order
    crop, flip, noise, each with its own key), or None when all are off. Flips and crops need
    image batches ``[b, H, W, C]``; ``check`` happens at the first traced call."""
    if not (config.flip_horizontal or config.crop_padding or config.noise_std):
        return None

    def augment(inputs: jax.Array, key: jax.Array) -> jax.Array:
        crop_key, flip_key, noise_key = jax.random.split(key, 3)
        if (config.flip_horizontal or config.crop_padding) and inputs.ndim != 4:
            raise ValueError(
                "train.augment: flips and crops need image batches [batch, height, width, "
                f"channels]; these inputs have shape {inputs.shape}"
            )
        if config.crop_padding:
            inputs = random_crop(inputs, crop_key, config.crop_padding)
        if config.flip_horizontal:
            inputs = flip_horizontal(inputs, flip_key)
        if config.noise_std:
            inputs = gaussian_noise(inputs, noise_key, config.noise_std)
        return inputs

    return augment
