"""What every metric shares: one implementation, two array backends, and input checks.

Each metric is written once against an array namespace ``xp`` and runs two ways:

- **eager** (no argument is a JAX tracer): ``xp`` is NumPy, in float64. Inputs are checked
  first, as scikit-learn checks them (``ValueError`` for mismatched lengths, empty inputs,
  NaN or infinite values, labels outside the classes), class and group counts are inferred
  from the data, and a scalar comes back as a Python ``float``. Nothing is compiled, so new
  input lengths cost nothing.
- **traced** (inside ``jax.jit``, ``vmap``, ``grad``, ``scan``): ``xp`` is ``jax.numpy``,
  in the inputs' float dtype (float32 unless x64 is enabled); counts that set shapes (classes,
  groups, bins, k) must be static Python ints, values cannot be checked, and where an input is
  invalid in a way that is cheap to see (a label outside ``[0, K)``) the metric is NaN.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike


def is_traced(*values: Any) -> bool:
    """True when any value is a JAX tracer (the call runs under a transformation)."""
    return any(isinstance(v, jax.core.Tracer) for v in values)


def backend(*values: Any) -> ModuleType:
    """``jax.numpy`` under a transformation, else ``numpy``."""
    return jnp if is_traced(*values) else np


def float_dtype(xp: ModuleType, *arrays: Any) -> Any:
    """float64 eagerly; under jit the inputs' float dtype, at least float32."""
    if xp is np:
        return np.float64
    return jnp.result_type(*(a.dtype for a in arrays), jnp.float32)


def output(xp: ModuleType, value: Any) -> Any:
    """A float for a 0-d result, else a NumPy array, eagerly; the array when traced."""
    if xp is not np:
        return value
    value = np.asarray(value)
    return float(value) if value.ndim == 0 else value


def static_int(value: Any, name: str, where: str, minimum: int = 1) -> int:
    """A Python int >= ``minimum`` (a count that sets a shape); TypeError names the argument."""
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{where}: {name} must be a Python int, got {type(value).__name__}; under jax.jit "
            f'pass static_argnames="{name}".'
        ) from None
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}.")
    return value


def scatter_add(xp: ModuleType, length: int, index: Any, values: Any) -> Any:
    """``out[index[i]] += values[i]`` into zeros of ``length`` (integer counts stay exact)."""
    if xp is np:
        values = np.asarray(values)
        out = np.zeros(length, np.result_type(values.dtype, np.int64))
        np.add.at(out, np.asarray(index), values)
        return out
    return jnp.zeros(length, values.dtype).at[index].add(values)


def map_rows(xp: ModuleType, fn: Callable, *arrays: Any) -> Any:
    """``fn`` over the leading axis of the arrays, stacked: ``jax.vmap`` when traced."""
    if xp is np:
        return np.stack([np.asarray(fn(*row)) for row in zip(*arrays, strict=True)])
    return jax.vmap(fn)(*arrays)


def bool_mask(xp: ModuleType, mask: ArrayLike | None, shape: tuple[int, ...], where: str) -> Any:
    """bool ``shape``: ``mask`` as booleans (0/1 numbers allowed), all True when None."""
    if mask is None:
        return xp.ones(shape, bool)
    mask = xp.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{where}: mask must have shape {shape}; got {mask.shape}.")
    return mask.astype(bool)


def divide_or_zero(
    xp: ModuleType, numerator: Any, denominator: Any, dtype: Any = jnp.float32
) -> Any:
    """numerator / denominator in ``dtype``, 0 where the denominator is 0 (sklearn's 0/0 -> 0)."""
    numerator = xp.asarray(numerator).astype(dtype)
    denominator = xp.asarray(denominator).astype(dtype)
    zero = denominator == 0
    return xp.where(zero, 0.0, numerator / xp.where(zero, 1.0, denominator)).astype(dtype)


# --- eager checks ------------------------------------------------------------------------------


def host_array(value: Any, name: str, where: str) -> np.ndarray:
    """``value`` as a NumPy array; ValueError if it is not array-like."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {name} is not an array ({error}).") from None
    return array


def check_lengths(where: str, **arrays: np.ndarray) -> int:
    """The common number of rows; ValueError on different lengths or none at all."""
    lengths = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
    for name, length in lengths.items():
        if length is None:
            raise ValueError(f"{where}: {name} must be an array of rows, got a scalar.")
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise ValueError(f"{where}: inputs have different numbers of rows ({shown}).")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"{where}: the inputs hold no rows (0 samples); a metric needs some.")
    return n


def check_finite(where: str, name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as numbers; ValueError naming the first NaN or infinite entry."""
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{where}: {name} must hold numbers, got dtype {values.dtype}.")
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            index = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), values.shape)
            at = f"row {index[0]}" + "".join(f", column {i}" for i in index[1:])
            raise ValueError(
                f"{where}: {name} contains {values[index]} at {at} ({int(bad.sum())} "
                "non-finite value(s)); metrics need finite numbers."
            )
    return values


def check_weights(where: str, sample_weight: Any, n: int) -> np.ndarray | None:
    """f64[n] finite weights, or None."""
    if sample_weight is None:
        return None
    weight = check_finite(where, "sample_weight", host_array(sample_weight, "sample_weight", where))
    if weight.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape [{n}]; got {weight.shape}.")
    return weight.astype(np.float64)


def class_ids(
    where: str, y: np.ndarray, num_classes: int, labels: Sequence | None, name: str = "y_true"
) -> np.ndarray:
    """int64[n] class ids in ``[0, K)`` from labels; ValueError for any other value.

    Without ``labels`` the classes are ``0 .. K-1`` (the columns of a score matrix); with
    ``labels`` (K distinct values) a row labelled ``labels[k]`` is class ``k``.
    """
    if y.ndim != 1:
        raise ValueError(f"{where}: {name} must have shape [n] (one label per row); got {y.shape}.")
    if labels is None:
        if y.dtype.kind == "f":
            check_finite(where, name, y)
            if np.any(y != np.round(y)):
                value = y[np.flatnonzero(y != np.round(y))[0]]
                raise ValueError(
                    f"{where}: {name} holds {_shown(value)}, not a class id (an integer)."
                )
        elif y.dtype.kind not in "biu":
            raise ValueError(
                f"{where}: {name} holds {y.dtype} labels; pass labels=[...] listing the classes "
                "in the order of the score columns."
            )
        ids = y.astype(np.int64)
        outside = (ids < 0) | (ids >= num_classes)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"{where}: {name} holds label {_shown(y[first])} (row {first}), outside the "
                f"{num_classes} classes [0, {num_classes}) of the scores; pass labels=[...] if "
                "the classes are other values."
            )
        return ids
    classes = np.asarray(labels)
    if classes.ndim != 1 or len(classes) != num_classes:
        raise ValueError(
            f"{where}: labels must list the {num_classes} classes (one per score column); got "
            f"{len(np.atleast_1d(classes))}."
        )
    if len(np.unique(classes)) != len(classes):
        raise ValueError(f"{where}: labels holds a class twice: {classes.tolist()}.")
    order = np.argsort(classes, kind="stable")
    position = np.searchsorted(classes[order], y)
    position = np.clip(position, 0, len(classes) - 1)
    found = classes[order][position] == y
    if not found.all():
        first = int(np.flatnonzero(~found)[0])
        raise ValueError(
            f"{where}: {name} holds label {_shown(y[first])} (row {first}), not one of labels "
            f"{classes.tolist()}."
        )
    return order[position].astype(np.int64)


def _shown(value: Any) -> str:
    """A label as the user wrote it: ``3``, ``'cat'`` (not ``np.int64(3)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


# --- labels -> class indices (classification) ----------------------------------------------


def host_labels(
    y_true: Any, y_pred: Any, labels: Any, num_classes: int | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes [K], true index [n], predicted index [n]); -1 where not a class. Eager."""
    y_true = host_array(y_true, "y_true", where)
    y_pred = host_array(y_pred, "y_pred", where)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim != 1:
            raise ValueError(
                f"{where}: {name} must have shape [n] (one label per row); got {y.shape}."
            )
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError(f"{where}: {name} holds NaN or infinite labels.")
    check_lengths(where, y_true=y_true, y_pred=y_pred)
    if labels is not None:
        classes = np.asarray(labels)
        if classes.ndim != 1 or len(classes) == 0:
            raise ValueError(f"{where}: labels must be a non-empty list of classes.")
        if len(np.unique(classes)) != len(classes):
            raise ValueError(f"{where}: labels lists a class twice: {classes.tolist()}.")
    elif num_classes is not None:
        classes = np.arange(static_int(num_classes, "num_classes", where))
    else:
        try:
            classes = np.unique(np.concatenate([y_true, y_pred]))
        except TypeError:
            raise ValueError(
                f"{where}: y_true and y_pred mix label types ({y_true.dtype}, {y_pred.dtype})."
            ) from None
    return classes, label_index(classes, y_true), label_index(classes, y_pred)


def label_index(classes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in ``classes``, -1 if absent."""
    order = np.argsort(classes, kind="stable")
    ordered = classes[order]
    try:
        position = np.clip(np.searchsorted(ordered, values), 0, len(classes) - 1)
        found = ordered[position] == values
    except TypeError:
        raise ValueError(
            "labels and the values in y_true / y_pred are of different types."
        ) from None
    return np.where(found, order[position], -1)


def traced_labels(
    y_true: Any, y_pred: Any, labels: Any, num_classes: int | None, where: str
) -> tuple[int, Any, Any]:
    """(K, true index, predicted index); -1 where not a class. Under a transformation."""
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: y_true and y_pred must both have shape [n]; got {y_true.shape} and "
            f"{y_pred.shape}."
        )
    if labels is not None:
        classes = jnp.asarray(np.asarray(labels))
        index = lambda y: jnp.where(  # noqa: E731
            jnp.any(y[:, None] == classes, 1), jnp.argmax(y[:, None] == classes, 1), -1
        )
        return classes.shape[0], index(y_true), index(y_pred)
    if num_classes is None:
        raise TypeError(
            f"{where}: under jax.jit pass num_classes (a static Python int) or labels; the "
            "classes cannot be read from traced values."
        )
    k = static_int(num_classes, "num_classes", where)
    inside = lambda y: jnp.where((y >= 0) & (y < k), y, -1).astype(jnp.int32)  # noqa: E731
    return k, inside(y_true), inside(y_pred)


def row_weights(xp: ModuleType, sample_weight: Any, mask: Any, n: int, where: str) -> Any:
    """Per-row weights: integers (exact counts) unless ``sample_weight`` is float."""
    if xp is np:
        weight = None
        if sample_weight is not None:
            raw = host_array(sample_weight, "sample_weight", where)
            weight = check_weights(where, raw, n)
            if raw.dtype.kind in "biu":
                weight = raw.astype(np.int64)
        if mask is not None:
            keep = host_array(mask, "mask", where)
            if keep.shape != (n,):
                raise ValueError(f"{where}: mask must have shape [{n}]; got {keep.shape}.")
            keep = keep.astype(bool)
            weight = keep.astype(np.int64) if weight is None else np.where(keep, weight, 0)
        return np.ones(n, np.int64) if weight is None else weight
    weight = jnp.ones(n, jnp.int32)
    if sample_weight is not None:
        weight = jnp.asarray(sample_weight)
        if not jnp.issubdtype(weight.dtype, jnp.floating):
            weight = weight.astype(jnp.int32)
    if mask is not None:
        keep = jnp.asarray(mask)
        if keep.shape != (n,):
            raise ValueError(f"{where}: mask must have shape {(n,)} like y_true; got {keep.shape}.")
        weight = jnp.where(keep.astype(bool), weight, jnp.zeros((), weight.dtype))
    if weight.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape [{n}]; got {weight.shape}.")
    return weight
