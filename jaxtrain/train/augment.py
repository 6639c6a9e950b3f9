"""Random augmentation: inside the train step (pure functions of (inputs, key)) or on the
host in grain workers (numpy functions of (inputs, generator)), by ``train.augment.where``.

Inside the step, streamed uint8 images are also converted to normalised float32 first
(:func:`build_augment` with ``convert``): the host then ships a quarter of the bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.config.schema import AugmentConfig

Augment = Callable[[jax.Array, jax.Array], jax.Array]


def check_image_batch(shape: tuple[int, ...], geometric: bool) -> None:
    """Flips and crops (``geometric``) act on ``[batch, height, width, channels]`` batches:
    a ValueError naming ``train.augment`` for any other shape."""
    if geometric and len(shape) != 4:
        raise ValueError(
            "train.augment: flips and crops need image batches [batch, height, width, "
            f"channels]; these inputs have shape {tuple(shape)}"
        )


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


def build_augment(config: AugmentConfig, convert=None) -> Augment | None:
    """``augment(inputs, key) -> inputs`` for the step: ``convert`` first (a
    :class:`~jaxtrain.data.streaming.HostTransform` whose missing-value fill and normaliser
    turn raw streamed inputs into float32), then the configured transformations (crop, flip,
    noise, each with its own key) unless they run on the host (``where: workers``). None
    when there is nothing to do. Flips and crops need image batches ``[b, H, W, C]``;
    ``check`` happens at the first traced call."""
    in_step = config.where == "step" and bool(
        config.flip_horizontal or config.crop_padding or config.noise_std
    )
    if not in_step and convert is None:
        return None

    def augment(inputs: jax.Array, key: jax.Array) -> jax.Array:
        if convert is not None:
            inputs = convert_inputs(inputs, convert)
        if not in_step:
            return inputs
        crop_key, flip_key, noise_key = jax.random.split(key, 3)
        check_image_batch(inputs.shape, config.flip_horizontal or config.crop_padding)
        if config.crop_padding:
            inputs = random_crop(inputs, crop_key, config.crop_padding)
        if config.flip_horizontal:
            inputs = flip_horizontal(inputs, flip_key)
        if config.noise_std:
            inputs = gaussian_noise(inputs, noise_key, config.noise_std)
        return inputs

    return augment


def convert_inputs(inputs: jax.Array, convert) -> jax.Array:
    """Raw inputs (uint8 images, float features with NaN) -> normalised float32, as
    :class:`~jaxtrain.data.streaming.HostTransform` does on the host."""
    x = inputs.astype(jnp.float32)
    if convert.fill is not None and jnp.issubdtype(inputs.dtype, jnp.floating):
        x = jnp.where(jnp.isnan(x), jnp.asarray(convert.fill, jnp.float32), x)
    normalizer = convert.normalizer
    return (x - jnp.asarray(normalizer.shift)) / jnp.asarray(normalizer.scale)


def step_conversion(config, data):
    """The conversion the step applies to the training batches of ``data``: the streamed
    training split's host transform when ``train.augment.where`` is ``step`` (the workers
    then ship raw inputs), else None."""
    from jaxtrain.data.streaming import is_streamed

    train = data.splits["train"]
    if is_streamed(train) and config.train.augment.where == "step":
        return train.transform
    return None


def host_augment(config: AugmentConfig) -> Callable | None:
    """``augment(inputs, rng) -> inputs`` in numpy for the grain workers (``where:
    workers``): the step's crop, flip and noise with draws from the generator ``rng``; None
    when augmentation is off or runs in the step."""
    if config.where != "workers" or not (
        config.flip_horizontal or config.crop_padding or config.noise_std
    ):
        return None
    return _HostAugment(config.flip_horizontal, config.crop_padding, config.noise_std)


class _HostAugment:
    """Picklable host augmentation: crop (zero padding, uniform offset), flip (p = 1/2),
    Gaussian noise, in that order, as in the step."""

    def __init__(self, flip: bool, padding: int, noise_std: float):
        self.flip, self.padding, self.noise_std = flip, padding, noise_std

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        check_image_batch(images.shape, self.flip or self.padding)
        if self.padding:
            images = host_random_crop(images, rng, self.padding)
        if self.flip:
            images = host_flip(images, rng)
        if self.noise_std:
            noise = rng.standard_normal(images.shape).astype(images.dtype)
            images = images + self.noise_std * noise
        return images


def host_random_crop(images: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
    """:func:`random_crop` in numpy: offsets ``rng.integers(0, 2 * padding + 1, (b, 2))``."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = rng.integers(0, 2 * padding + 1, (b, 2))
    return np.stack([padded[i, r : r + h, c : c + w] for i, (r, c) in enumerate(offsets)])


def host_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`flip_horizontal` in numpy: each image mirrored when ``rng.random() < 0.5``."""
    flip = rng.random(images.shape[0]) < 0.5
    return np.where(flip[:, None, None, None], images[:, :, ::-1, :], images)
