"""Input normalisation fitted on the training split only, applied to every split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_MIN_SCALE = 1e-6  # a constant feature (a blank image border) is centred, not blown up


@dataclass(frozen=True)
class Normalizer:
    """``(x - shift) / scale`` per feature of the last axis (per channel for images).

    shift, scale: float32 [features]. Fitted by :func:`fit_normalizer`; stored with a run as
    JSON (``to_dict``) so evaluation reuses exactly the training statistics.
    """

    method: str
    shift: np.ndarray
    scale: np.ndarray

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """inputs: numeric [n, ..., features] -> float32 of the same shape.

        float64 inputs (tables, regression targets) are shifted and scaled in float64 and
        rounded once: a target of 100000.3 would lose its decimals as float32 (its spacing
        there is 0.008) before the shift could bring it near zero.
        """
        dtype = np.float64 if inputs.dtype == np.float64 else np.float32
        return ((inputs.astype(dtype) - self.shift) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Normalizer:
        return cls(
            method=data["method"],
            shift=np.asarray(data["shift"], np.float32),
            scale=np.asarray(data["scale"], np.float32),
        )


def fit_normalizer(train_inputs: np.ndarray, method: str) -> Normalizer:
    """Fit ``method`` ('none' | 'standard' | 'minmax') on the training inputs [n, ..., f].

    'standard' centres to mean 0 and scales to unit (population) standard deviation,
    'minmax' maps each feature's training range to [0, 1]; both reduce over every axis but the
    last. Statistics are computed in float64 and stored as float32.
    """
    x = train_inputs.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    features = x.shape[-1]
    if method == "none":
        shift, scale = np.zeros(features), np.ones(features)
    elif method == "standard":
        shift, scale = x.mean(axis=axes), x.std(axis=axes)
    elif method == "minmax":
        shift = x.min(axis=axes)
        scale = x.max(axis=axes) - shift
    else:
        raise ValueError(f"unknown normalisation {method!r}; expected none, standard or minmax")
    scale = np.where(scale < _MIN_SCALE, 1.0, scale)
    return Normalizer(method, shift.astype(np.float32), scale.astype(np.float32))
