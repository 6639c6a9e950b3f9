"""Shared building blocks of the config dataclasses: strictness and constrained number types.

Every float of every section is finite (``allow_inf_nan=False``, both in ``STRICT`` and in the
float types below, so a new section gets it either way). Every integer has an upper bound
with its reason, checked when the config is read: past it the run would crash in JAX, wrap
around silently, or run for longer than anyone means.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field

STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

INT32_MAX = 2**31 - 1


def capped(limit: int, why: str, *, low: int = 1) -> Any:
    """An int type in ``[low, limit]``; the error past ``limit`` gives ``why``."""

    def at_most(value: int) -> int:
        if value > limit:
            raise ValueError(f"Input should be at most {limit} ({why}) (got {value})")
        return value

    lower = Field(gt=0) if low == 1 else Field(ge=low)  # "greater than 0" reads best
    return Annotated[int, lower, AfterValidator(at_most)]


_INT32 = "JAX counts steps, sizes and indices in 32-bit integers"
PositiveInt = capped(INT32_MAX, _INT32)
NonNegativeInt = capped(INT32_MAX, _INT32, low=0)
Seed = capped(
    2**32 - 1,
    "seeds are 32-bit: grain's shuffles refuse larger ones and JAX folds them onto the same key",
    low=0,
)
Epochs = capped(1_000_000, "a sanity cap: no run needs a million passes or rounds")
BatchSize = capped(2**20, "a sanity cap: one batch is one array in device memory")
Width = capped(2**16, "a sanity cap: one dense layer that wide has 4 billion parameters")
Small = capped(1024, "a sanity cap on layers, heads, ratios, kernels, patches and padding")

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFloat = Annotated[FiniteFloat, Field(gt=0)]
NonNegativeFloat = Annotated[FiniteFloat, Field(ge=0)]
Fraction = Annotated[FiniteFloat, Field(ge=0, lt=1)]
RunName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
