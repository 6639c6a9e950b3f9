"""Pure model families, built from config by name.

Flax modules (MLP, CNN, ResNet, linear/logistic, Transformer LM, ViT) are called as
``model.apply(variables, x, train=...)`` and trained by the gradient loop; decision trees and
forests are array-backed pytrees with their own pure, jittable ``fit``/``predict``. A name
that is not built in is a family of :mod:`jaxtrain.registry` (registered in Python, an import
path or an installed package's entry point): its builder makes a Flax linen or NNX module,
trained through the same step (see :mod:`jaxtrain.models.adapters`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxtrain import registry
from jaxtrain.config import (
    CNNConfig,
    LinearConfig,
    MLPConfig,
    ResNetConfig,
    TransformerLMConfig,
    ViTConfig,
)
from jaxtrain.models.adapters import LinenModel, NNXModel, as_model
from jaxtrain.models.cnn import CNN
from jaxtrain.models.linear import Linear, fit_least_squares, l2_penalty
from jaxtrain.models.mlp import MLP
from jaxtrain.models.resnet import ResNet
from jaxtrain.models.transformer import TransformerLM, generate
from jaxtrain.models.vit import ViT


def _mlp(config: MLPConfig, outputs: int, shape: tuple[int, ...]) -> nn.Module:
    return MLP(tuple(config.hidden), outputs, config.activation, config.dropout)


def _cnn(config: CNNConfig, outputs: int, shape: tuple[int, ...]) -> nn.Module:
    return CNN(
        tuple(config.features),
        outputs,
        config.kernel_size,
        config.dense,
        config.dropout,
        config.batch_norm,
    )


def _resnet(config: ResNetConfig, outputs: int, shape: tuple[int, ...]) -> nn.Module:
    return ResNet(
        stage_sizes=tuple(config.stage_sizes),
        features=tuple(config.features),
        num_classes=outputs,
        dropout=config.dropout,
        remat=config.remat,
    )


def _linear(config: LinearConfig, outputs: int, shape: tuple[int, ...]) -> nn.Module:
    return Linear(outputs)


def _transformer_lm(config: TransformerLMConfig, outputs: int, shape: tuple[int, ...]) -> nn.Module:
    return TransformerLM(
        vocab_size=outputs,
        d_model=config.d_model,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        mlp_ratio=config.mlp_ratio,
        max_len=shape[0],
        positions=config.positions,
        dropout=config.dropout,
        dtype=jnp.dtype(config.compute_dtype),
        remat=config.remat,
    )


def _vit(config: ViTConfig, outputs: int, shape: tuple[int, ...]) -> nn.Module:
    return ViT(
        num_classes=outputs,
        patch_size=config.patch_size,
        d_model=config.d_model,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        mlp_ratio=config.mlp_ratio,
        dropout=config.dropout,
        remat=config.remat,
    )


# name in the config -> constructor(config section, outputs, example shape). The one registry.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet": _resnet,
    "linear": _linear,
    "transformer_lm": _transformer_lm,
    "vit": _vit,
}

# Families fitted by a pure ``fit`` of their own rather than by the gradient loop.
TREE_MODELS = ("decision_tree", "random_forest")

# The tasks each family serves.
TASKS_OF: dict[str, tuple[str, ...]] = {
    "mlp": ("classification", "regression"),
    "cnn": ("classification", "regression"),
    "resnet": ("classification", "regression"),
    "vit": ("classification", "regression"),
    "linear": ("classification", "regression"),
    "transformer_lm": ("language_model",),
    "decision_tree": ("classification", "regression"),
    "random_forest": ("classification", "regression"),
}

# Models that need a particular example rank (images: [height, width, channels]; the CNN
# also convolves sequences [length] or [length, channels] in 1-D).
INPUT_RANKS: dict[str, tuple[int, ...]] = {"cnn": (1, 2, 3), "resnet": (3,), "vit": (3,)}
SHAPES = {1: "length", 2: "length, channels", 3: "height, width, channels"}


def is_fitted(config: Any) -> bool:
    """True when ``config`` names a model fitted without the gradient loop (trees, forests,
    closed-form least squares)."""
    return config.name in TREE_MODELS or (
        config.name == "linear" and config.solver == "closed_form"
    )


def check_model_fits_data(config: Any, data: Any) -> None:
    """Raise ValueError (naming the config key) if model ``config`` cannot learn ``data``."""
    if config.name in TASKS_OF:
        tasks, ranks = TASKS_OF[config.name], INPUT_RANKS.get(config.name)
    else:
        spec = registry.resolve("model", config.name).spec
        tasks, ranks = spec.tasks, spec.input_ranks
    if data.task not in tasks:
        hint = "transformer_lm" if data.task == "language_model" else "e.g. mlp"
        raise ValueError(
            f"model.name: {config.name} does not do {data.task} (it does "
            f"{' or '.join(tasks)}); use model.name={hint}"
        )
    if ranks is not None and len(data.input_shape) not in ranks:
        shapes = " or ".join(f"rank {r} ({SHAPES.get(r, 'any')})" for r in ranks)
        raise ValueError(
            f"model.name: {config.name} needs examples of {shapes}, but the data's examples "
            f"have shape {tuple(data.input_shape)}; use model.name=mlp"
        )
    if config.name == "linear" and config.solver == "closed_form" and data.task != "regression":
        raise ValueError(
            "model.solver: closed_form is least squares, for regression data only; "
            "use model.solver=gradient for logistic regression"
        )
    if config.name in TREE_MODELS:
        regression = config.criterion == "squared_error"
        if regression != (data.task == "regression"):
            wanted = "squared_error" if data.task == "regression" else "gini or entropy"
            raise ValueError(
                f"model.criterion: {config.criterion} does not fit {data.task} data; use {wanted}"
            )


def build_model(
    config: Any,
    num_outputs: int,
    input_shape: tuple[int, ...] = (),
    axis_name: str | None = None,
    dtype: Any = None,
) -> Any:
    """The model named by ``config.name`` with ``num_outputs`` outputs (classes, targets or
    vocabulary) for examples shaped ``input_shape`` (the LM reads its context length from
    it). Built-ins are Flax linen modules, called as ``model.apply(vars, x, train=...)``; a
    registered family gives what its builder makes (a linen module, or an
    :class:`~jaxtrain.models.adapters.NNXModel` for an NNX builder, initialised from the run's
    seed). ``axis_name``: the ``pmap`` axis over which BatchNorm (CNN, ResNet, a linen module
    with an ``axis_name`` field) averages its batch statistics; other families ignore it.
    ``dtype``: the compute dtype of ``train.precision`` for modules with a ``dtype`` field
    (CNN, ResNet, ViT, Transformer LM): their convolutions, dense layers and BatchNorm compute
    in it (parameters stay float32), so BatchNorm's float32 statistics do not promote the
    rest of the network back to float32."""
    if config.name in TREE_MODELS:
        raise ValueError(f"model.name: {config.name} is fitted, not built as a Flax module")
    if config.name in MODELS:
        model = MODELS[config.name](config, num_outputs, tuple(input_shape))
    else:
        model = _build_registered(config, num_outputs, tuple(input_shape))
    if axis_name is not None and isinstance(model, nn.Module) and hasattr(model, "axis_name"):
        model = model.clone(axis_name=axis_name)
    if dtype is not None and isinstance(model, nn.Module) and hasattr(model, "dtype"):
        model = model.clone(dtype=dtype)
    return model


def _build_registered(config: Any, num_outputs: int, input_shape: tuple[int, ...]) -> Any:
    spec = registry.resolve("model", config.name).spec
    if spec.nnx:
        return NNXModel.from_factory(
            lambda rngs: spec.builder(config, num_outputs, input_shape, rngs)
        )
    model = spec.builder(config, num_outputs, input_shape)
    as_model(model)  # a clear TypeError now for something that is not a Flax module
    return model


def build_penalty(config: Any) -> Callable[[Any], Any] | None:
    """The regulariser the model's config adds to the loss (linear: ``l2 * 0.5||kernel||^2``)."""
    if config.name == "linear" and config.l2 > 0:
        strength = config.l2
        return lambda params: strength * l2_penalty(params)
    return None


__all__ = [
    "CNN",
    "INPUT_RANKS",
    "LinenModel",
    "NNXModel",
    "MLP",
    "MODELS",
    "TREE_MODELS",
    "Linear",
    "ResNet",
    "TransformerLM",
    "ViT",
    "as_model",
    "build_model",
    "build_penalty",
    "check_model_fits_data",
    "fit_least_squares",
    "generate",
    "is_fitted",
]
