"""``data.prepare``: what data preparation does about duplicates, errors, missing values,
label errors and leakage (see docs/data.md).

The defaults only report: on data without defects (every bundled dataset) they change nothing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import (
    STRICT,
    FiniteFloat,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    capped,
)

Decimals = capped(323, "float64 has no decimal digits past the 323rd", low=0)
Hidden = capped(2**16, "a sanity cap: one dense layer that wide has 4 billion parameters", low=0)


def _yaml_off(value):
    """YAML 1.1 reads a bare ``off`` as false; here it means the word."""
    return "off" if value is False else value


def _switch(*actions: str):
    """``off`` or one of ``actions``, accepting YAML's ``off`` (false) as ``"off"``."""
    return Annotated[Literal[("off", *actions)], BeforeValidator(_yaml_off)]


Action = _switch("report", "drop")
LeakageAction = _switch("report", "error")


@dataclass(config=STRICT)
class NearDuplicatesConfig:
    """Rows that are equal after rounding numbers to ``decimals`` and normalising text (strip,
    lower case), or, with ``max_distance``, whose features (images: pixels) lie within that
    L2 distance of each other. ``drop`` keeps the first row of each near-duplicate group."""

    action: Action = "off"
    decimals: Decimals = 2
    max_distance: NonNegativeFloat | None = None


@dataclass(config=STRICT)
class LabelErrorsConfig:
    """Confident learning on out-of-fold probabilities of the training split.

    ``folds`` models are trained at once (one vmapped program): a one-hidden-layer tanh MLP
    of ``hidden`` units (0: multinomial logistic regression), for ``steps`` full-batch Adam
    steps at ``learning_rate`` with an ``l2`` penalty on the weights.
    """

    action: Action = "off"
    folds: Annotated[int, Field(ge=2, le=20)] = 5
    hidden: Hidden = 64
    steps: PositiveInt = 300
    learning_rate: PositiveFloat = 0.05
    l2: NonNegativeFloat = 1e-4


Bound = FiniteFloat | None


@dataclass(config=STRICT)
class PrepareConfig:
    """Cleaning rules, applied in this order before the split: ``invalid`` values, rows with
    ``missing`` values (when ``drop``), exact ``duplicates``, ``conflicts`` (equal features,
    different labels), ``near_duplicates``. Then, fitted on the training split only:
    imputation of ``missing`` values, ``label_errors``, ``class_weights``; finally the
    ``leakage`` check across the splits.

    ``ranges`` declares ``{column: [low, high]}`` (either may be null); values outside are
    invalid, as are non-finite numbers, categories outside ``categories`` and labels outside
    the label set. ``fill_value`` is what ``missing: constant`` fills in (a number for numeric
    columns, text for categorical ones); ``add_indicator`` adds a 0/1 ``<column>_missing``
    feature for every column that had missing values in the training split.

    ``max_drop_fraction`` caps the share of the training split that the dropping rules may
    remove together (see :func:`jaxtrain.data.clean.drop_summary`); past it preparation
    fails, naming the rules. The default 0.5: the defaults drop nothing (they only report),
    ordinary cleaning removes a few percent (duplicates, invalid rows, 5-20% label noise),
    and once half of the training data is gone the cleaning rules, not the data, decide what
    the model learns; 1.0 turns the cap off.
    """

    duplicates: Action = "report"
    near_duplicates: NearDuplicatesConfig = Field(default_factory=NearDuplicatesConfig)
    conflicts: Action = "report"
    invalid: Literal["error", "drop"] = "error"
    ranges: dict[str, tuple[Bound, Bound]] = Field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    missing: Literal["error", "drop", "mean", "median", "most_frequent", "constant"] = "error"
    fill_value: FiniteFloat | str | None = None
    add_indicator: bool = False
    label_errors: LabelErrorsConfig = Field(default_factory=LabelErrorsConfig)
    leakage: LeakageAction = "report"
    class_weights: Literal["none", "balanced"] = "none"
    max_drop_fraction: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.5

    @model_validator(mode="after")
    def _constant_needs_a_value(self) -> PrepareConfig:
        if self.missing == "constant" and self.fill_value is None:
            raise ValueError("fill_value: required when missing is 'constant'")
        if self.missing != "constant" and self.fill_value is not None:
            raise ValueError(f"fill_value: only used with missing: constant (not {self.missing})")
        for column, (low, high) in self.ranges.items():
            if low is not None and high is not None and low > high:
                raise ValueError(f"ranges.{column}: low {low} is above high {high}")
        return self
