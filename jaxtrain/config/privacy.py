"""Centralised differentially private training (DP-SGD): the ``train.dp`` section.

See docs/privacy.md. Each step samples every training example independently with
probability ``q = data.batch_size / n`` (Poisson sampling), clips each example's gradient to
``clip_norm``, sums, adds Gaussian noise of standard deviation ``noise_multiplier *
clip_norm`` and divides by the expected batch size ``data.batch_size``. Adjacency: adding or
removing one training example. Accounted by ``jaxtrain.privacy.accounting``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT, BatchSize, FiniteFloat, NonNegativeFloat, PositiveFloat


@dataclass(config=STRICT)
class DPSGDConfig:
    """``clip_norm`` C (per-example L2 bound); ``noise_multiplier`` sigma, or
    ``target_epsilon`` (sigma calibrated so the whole run spends at most that at ``delta``;
    default sigma 1.0); ``accountant`` pld (tight) or rdp; ``max_batch``: the slots a step's
    Poisson batch is padded to (a batch drawn larger keeps a uniformly random ``max_batch`` of
    its examples, which the PLD accountant accounts exactly; default: the expected batch plus
    six standard deviations). With ``accountant: rdp`` the batch is never truncated: set no
    ``max_batch`` and every step has the whole training split's slots."""

    clip_norm: PositiveFloat = 1.0
    noise_multiplier: NonNegativeFloat | None = None
    target_epsilon: PositiveFloat | None = None
    delta: Annotated[FiniteFloat, Field(gt=0, lt=1)] = 1e-5
    accountant: Literal["pld", "rdp"] = "pld"
    max_batch: BatchSize | None = None

    @model_validator(mode="after")
    def _one_noise_setting(self) -> DPSGDConfig:
        one_noise_setting(self)
        if self.accountant == "rdp" and self.max_batch is not None:
            raise ValueError(
                "max_batch: a truncated Poisson batch is accounted by the PLD accountant only; "
                "use accountant: pld or remove max_batch"
            )
        return self


def one_noise_setting(section) -> None:
    """A DP section sets ``noise_multiplier`` or ``target_epsilon``, not both; neither means
    the documented default noise multiplier 1.0 (filled in on the frozen section)."""
    if section.noise_multiplier is not None and section.target_epsilon is not None:
        raise ValueError(
            "target_epsilon: set noise_multiplier or target_epsilon, not both (the noise "
            "multiplier is calibrated from target_epsilon)"
        )
    if section.noise_multiplier is None and section.target_epsilon is None:
        object.__setattr__(section, "noise_multiplier", 1.0)


def dp_sgd_problem(config) -> str | None:
    """Why ``config`` (a whole Config) cannot train with ``train.dp``, or None: settings
    whose privacy the step could not keep (BatchNorm statistics, per-device noise) or whose
    batches are not Poisson-sampled (fused epochs, micro-batches)."""
    train = config.train
    if train.dp is None:
        return None
    model = config.model
    name = getattr(model, "name", None)
    if name == "resnet" or (name == "cnn" and getattr(model, "batch_norm", False)):
        return (
            "train.dp: BatchNorm's running statistics are computed from the batch without "
            "clipping or noise and published with the model; use a model without BatchNorm "
            "(model.batch_norm: false) or remove train.dp"
        )
    for key, value, default, why in (
        ("parallel", train.parallel, "none", "the noise is added once, on one device"),
        ("fused_epochs", train.fused_epochs, False, "DP batches are Poisson samples"),
        ("micro_batches", train.micro_batches, 1, "per-example gradients are already split"),
    ):
        if value != default:
            return f"train.{key}: cannot be combined with train.dp ({why}); remove it"
    if config.federated is not None:
        return "train.dp: a federated run is private through federated.dp; remove train.dp"
    return None
