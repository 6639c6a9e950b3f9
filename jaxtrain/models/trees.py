"""Decision trees (CART) and random forests as array-backed pytrees, fitted in pure JAX.

A tree is a ``Tree`` of fixed-capacity arrays, so fitting is one jittable function and a
forest is ``jax.vmap(fit_tree)`` over keys and bootstrap weights.

The fit is exact CART as scikit-learn does it: the best threshold of every feature is searched
over the midpoints between consecutive distinct sorted values, scored by the weighted impurity
decrease, with ``min_samples_leaf``/``min_samples_split`` and per-node ``max_features`` draws.
It grows level by level in a ``lax.while_loop``. Each feature's examples are sorted once; after
each level they are stably partitioned so that every node's examples stay one contiguous,
sorted segment. One scan along the positions, all features side by side, then accumulates the
left child's statistics, scores every candidate threshold and keeps each segment's running
best. Memory is O(n * d + nodes * d) per level (plus a ``[classes, d]`` carry), and no Python
loop runs over nodes or levels. Features must be finite (no NaN).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp

# scikit-learn's FEATURE_THRESHOLD: values closer than this count as the same value.
FEATURE_THRESHOLD = 1e-7
_INVALID = -1e30  # score of a position that separates two values but breaks min_samples_leaf

CRITERIA = {"classification": ("gini", "entropy"), "regression": ("squared_error",)}
MaxFeatures = None | int | float | Literal["sqrt", "log2"]


@flax.struct.dataclass
class Tree:
    """A fitted tree (or, with a leading ``[n_estimators]`` axis on every array, a forest).

    ``M`` node slots, numbered breadth-first from the root 0 (a node's children have larger
    ids); ``M = min(2 ** (max_depth + 1), 2 * (n // min_samples_leaf)) - 1`` bounds any fit,
    and slots a fit does not use have ``n_node_samples == 0``. ``K`` is the number of classes
    (classification) or 1 (regression).

    - ``feature: i32[M]``: feature a split node tests; -1 at leaves.
    - ``threshold: f32[M]``: an example goes left when ``x[feature] <= threshold``.
    - ``left, right: i32[M]``: children's ids; -1 at leaves.
    - ``value: f32[M, K]``: class probabilities (weighted fractions) or the mean target.
    - ``impurity: f32[M]``: gini, entropy (bits) or variance, as scikit-learn's ``tree_``.
    - ``weighted_n_node_samples: f32[M]``: total training weight reaching the node.
    - ``n_node_samples: i32[M]``: training examples (of nonzero weight) reaching the node.
    - ``depth: i32[M]``: the node's level, root 0.
    - ``is_leaf: bool[M]``: True also for unused slots.
    - ``impurity_decrease: f32[M]``: ``(w * impurity - w_left * impurity_left - w_right *
      impurity_right) / w_root`` at split nodes, 0 at leaves (``w``: weighted sample count).
    - ``num_features``: static, the ``d`` the tree was fitted on.
    """

    feature: jax.Array
    threshold: jax.Array
    left: jax.Array
    right: jax.Array
    value: jax.Array
    impurity: jax.Array
    weighted_n_node_samples: jax.Array
    n_node_samples: jax.Array
    depth: jax.Array
    is_leaf: jax.Array
    impurity_decrease: jax.Array
    num_features: int = flax.struct.field(pytree_node=False)


def resolve_max_features(max_features: MaxFeatures, num_features: int) -> int:
    """scikit-learn's rule: how many features each node draws (at least 1, at most ``d``)."""
    if max_features is None:
        count = num_features
    elif max_features == "sqrt":
        count = int(math.sqrt(num_features))
    elif max_features == "log2":
        count = int(math.log2(num_features))
    elif isinstance(max_features, bool) or not isinstance(max_features, int | float):
        raise ValueError(
            f"max_features must be None, an int, a float in (0, 1], 'sqrt' or 'log2'; "
            f"got {max_features!r}"
        )
    elif isinstance(max_features, float):
        if not 0.0 < max_features <= 1.0:
            raise ValueError(f"max_features as a float is a fraction in (0, 1]; got {max_features}")
        count = int(max_features * num_features)
    else:
        if max_features < 1:
            raise ValueError(f"max_features as an int must be >= 1; got {max_features}")
        count = max_features
    return max(1, min(count, num_features))


def _check_settings(task, criterion, num_classes, max_depth, min_samples_split, min_samples_leaf):
    if task not in CRITERIA:
        raise ValueError(f"task must be 'classification' or 'regression'; got {task!r}")
    criterion = criterion or CRITERIA[task][0]
    if criterion not in CRITERIA[task]:
        raise ValueError(
            f"criterion {criterion!r} does not fit task {task!r}; use one of {CRITERIA[task]}"
        )
    if task == "classification" and (num_classes is None or num_classes < 1):
        raise ValueError(
            "classification needs num_classes (an int >= 1, e.g. int(y.max()) + 1): "
            "a jitted fit cannot read it from the labels"
        )
    if max_depth is not None and (not isinstance(max_depth, int) or max_depth < 0):
        raise ValueError(f"max_depth must be None or an int >= 0; got {max_depth!r}")
    if min_samples_split < 2 or min_samples_leaf < 1:
        raise ValueError(
            f"need min_samples_split >= 2 and min_samples_leaf >= 1; got {min_samples_split}, "
            f"{min_samples_leaf}"
        )
    return criterion


# --- node statistics -------------------------------------------------------------------------
# Per-example statistics ``stat: f32[n, S]`` whose sums over a node give everything needed:
# classification: weighted one-hot labels (S = K); regression: (w, w y, w y^2) (S = 3).
# The split search builds the first ones on the fly from ``columns`` (label and weight, or
# weight and weighted target): gathering a [n, S, d] array per level would cost more than the
# whole search.


def _stats_at(columns: tuple[jax.Array, ...], num_classes: int | None) -> jax.Array:
    """The statistics of one position of every feature, ``f32[S, d]`` (S = K, or 2: w, w y)."""
    if num_classes is None:
        return jnp.stack(columns)
    label, weight = columns
    return (label[None, :] == jnp.arange(num_classes)[:, None]) * weight[None, :]


def _proxy(criterion: str, left: jax.Array, right: jax.Array) -> jax.Array:
    """scikit-learn's proxy impurity improvement (argmax-equivalent), ``[S, d] -> [d]``."""
    if criterion == "gini":
        return (left * left).sum(0) / left.sum(0) + (right * right).sum(0) / right.sum(0)
    if criterion == "entropy":
        w_l, w_r = left.sum(0), right.sum(0)
        xlogx = jax.scipy.special.xlogy
        return (
            xlogx(left, left).sum(0)
            - xlogx(w_l, w_l)
            + xlogx(right, right).sum(0)
            - xlogx(w_r, w_r)
        )
    return left[1] ** 2 / left[0] + right[1] ** 2 / right[0]


def _impurity_and_value(criterion: str, totals: jax.Array) -> tuple[jax.Array, ...]:
    """``totals: f32[nodes, S]`` -> impurity f32[nodes], weight f32[nodes], value f32[nodes, K]."""
    if criterion == "squared_error":
        weight = totals[:, 0]
        safe = jnp.where(weight > 0, weight, 1.0)
        mean = totals[:, 1] / safe
        impurity = jnp.maximum(totals[:, 2] / safe - mean**2, 0.0)
        return impurity, weight, mean[:, None]
    weight = totals.sum(-1)
    p = totals / jnp.where(weight > 0, weight, 1.0)[:, None]
    if criterion == "gini":
        impurity = 1.0 - (p * p).sum(-1)
    else:
        impurity = -jax.scipy.special.xlogy(p, p).sum(-1) / math.log(2.0)
    return impurity, weight, p


# --- one level -------------------------------------------------------------------------------
# Layout: positions lead. ``order: i32[n, d]`` holds, for each feature, the examples sorted so
# that every live node is one contiguous segment (in slot order) sorted by value, followed by
# padding. ``seg: i32[n]`` is the slot of each position (``width`` past the live ones) and
# ``seg_start: i32[width + 1]`` where each slot begins; both are the same for every feature.
# The per-position work runs as ``lax.scan`` over positions with all features side by side:
# on CPU that fused loop is several times faster than cumulative sums over [n, S, d] arrays.


def _scan_cumsum(values: jax.Array) -> jax.Array:
    """Inclusive cumulative sum along axis 0 (a scan: on CPU several times faster than
    ``jnp.cumsum`` along a leading axis)."""

    def add(total, value):
        total = total + value
        return total, total

    return jax.lax.scan(add, jnp.zeros_like(values[0]), values)[1]


def _segments(counts: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Contiguous segments of sizes ``counts: i32[width]`` -> (start i32[width + 1], slot of each
    position i32[n]); positions past the last segment get the sentinel ``width``."""
    ends = jnp.cumsum(counts)
    start = jnp.concatenate([jnp.zeros(1, jnp.int32), ends])
    return start, jnp.searchsorted(ends, jnp.arange(n, dtype=jnp.int32), side="right")


def _repartition(order, new_node, seg, seg_start, width):
    """Stable-partition every feature's order so each new slot is one segment, in slot order.

    ``new_node: i32[n]`` is each example's new slot, ``width`` for examples that leave (they
    are dropped; the tail of the new order is padding). The children of one old segment are
    slots ``2r`` and ``2r + 1``, so an example's rank in its child is a running count of left
    (or right) goers since the start of its old segment.
    """
    n, d = order.shape
    counts = jnp.zeros(width, jnp.int32).at[new_node].add(1, mode="drop")
    new_start, new_seg = _segments(counts, n)
    key = new_node[order]
    gone = (key >= width) | (seg >= width)[:, None]
    goes_right = (key % 2 == 1) & ~gone
    sides = jnp.stack([~goes_right & ~gone, goes_right], axis=1).astype(jnp.int32)
    before = _scan_cumsum(sides) - sides  # [n, 2, d]: goers strictly before each position
    before = before - before[seg_start[seg]]
    rank = jnp.where(goes_right, before[:, 1], before[:, 0])
    new_pos = jnp.where(gone, n, new_start[jnp.minimum(key, width - 1)] + rank)
    new_order = jnp.zeros_like(order).at[new_pos, jnp.arange(d)[None, :]].set(order, mode="drop")
    return new_order, new_seg, new_start, counts


def _best_splits(
    order, group, columns, seg, seg_start, counts, totals, *, criterion, num_classes, min_leaf
):
    """Each slot's best split per feature: (score f32[width, d], position i32[width, d]).

    The split at position ``p`` sends positions ``<= p`` of the segment left; the first of
    equal scores wins, as in scikit-learn. A score of -inf means the feature is constant in
    the node, ``_INVALID`` that it varies but no threshold leaves ``min_samples_leaf``
    examples on both sides.
    """
    n, d = order.shape
    pos = jnp.arange(n, dtype=jnp.int32)
    start = seg_start[seg]
    end = start + jnp.concatenate([counts, jnp.zeros(1, jnp.int32)])[seg]
    leaf_ok = (pos - start + 1 >= min_leaf) & (end - pos - 1 >= min_leaf)
    group = group[order, jnp.arange(d)[None, :]]
    next_group = jnp.concatenate([group[1:], group[-1:]])
    distinct = (pos + 1 < end)[:, None] & (next_group > group)
    usable = distinct.astype(jnp.int32) + (distinct & leaf_ok[:, None])  # 0, 1 or 2 (valid)
    totals = totals[:, : num_classes or len(columns)]  # regression's w y^2 is not needed here
    node_totals = jnp.concatenate([totals, jnp.zeros_like(totals[:1])])[seg]

    def scan_position(carry, item):
        left, best = carry
        cols, first, total, use = item
        stats = _stats_at(cols, num_classes)
        left = jnp.where(first, stats, left + stats)
        score = jnp.where(
            use == 2,
            _proxy(criterion, left, total[:, None] - left),
            jnp.where(use == 1, _INVALID, -jnp.inf),
        )
        best = jnp.maximum(jnp.where(first, -jnp.inf, best), score)
        return (left, best), best

    items = (tuple(c[order] for c in columns), pos == start, node_totals, usable)
    init = (jnp.zeros((node_totals.shape[1], d)), jnp.full(d, -jnp.inf))
    running = jax.lax.scan(scan_position, init, items)[1]  # best so far in the segment
    last = jnp.clip(seg_start[1:] - 1, 0, n - 1)
    best = jnp.where((counts > 0)[:, None], running[last], -jnp.inf)
    # The running best only grows within a segment, so the first best position is the start
    # plus the number of positions still below it (cheaper than tracking an argmax in the scan).
    below = running < jnp.concatenate([best, jnp.full((1, d), jnp.inf)])[seg]
    at = seg_start[:-1, None] + jax.ops.segment_sum(
        below.astype(jnp.int32), seg, counts.shape[0], indices_are_sorted=True
    )
    return best, at


def _choose_features(best, key, max_features):
    """Mask ``best: f32[width, d]`` to each node's random draw, as scikit-learn draws: the
    first ``max_features`` of a random permutation, and when none of those varies in the node,
    the first varying feature after them (uniform among the varying ones)."""
    width, d = best.shape
    if max_features >= d:
        return best
    draw_key, fallback_key = jax.random.split(key)
    rows = jnp.arange(width)

    def swap(i, perm):  # one Fisher-Yates step per node, all nodes at once
        j = jax.random.randint(jax.random.fold_in(draw_key, i), (width,), i, d)
        head, other = perm[:, i], perm[rows, j]
        return perm.at[rows, j].set(head).at[:, i].set(other)

    perm = jax.lax.fori_loop(0, max_features, swap, jnp.broadcast_to(jnp.arange(d), (width, d)))
    drawn = jnp.zeros((width, d), bool).at[rows[:, None], perm[:, :max_features]].set(True)
    varying = best > -jnp.inf
    fallback = jnp.argmax(jnp.where(varying, jax.random.uniform(fallback_key, (width, d)), -1), 1)
    none_varying = ~(drawn & varying).any(axis=1, keepdims=True)
    drawn = drawn | (none_varying & (jnp.arange(d) == fallback[:, None]))
    return jnp.where(drawn, best, -jnp.inf)


def _find_splits(
    x,
    group,
    columns,
    order,
    seg,
    seg_start,
    counts,
    totals,
    can_split,
    key,
    *,
    criterion,
    num_classes,
    min_leaf,
    max_features,
):
    """Each slot's split: feature i32[width], threshold f32[width], split bool[width]."""
    n = x.shape[0]
    best, at = _best_splits(
        order,
        group,
        columns,
        seg,
        seg_start,
        counts,
        totals,
        criterion=criterion,
        num_classes=num_classes,
        min_leaf=min_leaf,
    )
    best = _choose_features(best, key, max_features)
    slots = jnp.arange(best.shape[0])
    feature = jnp.argmax(best, axis=1).astype(jnp.int32)
    split = can_split & (best[slots, feature] > _INVALID)
    p = jnp.clip(at[slots, feature], 0, n - 2)
    lo, hi = x[order[p, feature], feature], x[order[p + 1, feature], feature]
    mid = lo / 2 + hi / 2
    threshold = jnp.where(mid < hi, mid, lo)  # the midpoint, unless it rounds up to hi
    return feature, threshold, split


def _write(tree: dict, ids: jax.Array, **columns: jax.Array) -> dict:
    """``tree[name][ids] = column`` for each column; ids out of range are dropped."""
    return tree | {name: tree[name].at[ids].set(col, mode="drop") for name, col in columns.items()}


def _presort(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each feature's examples in increasing order (ties by index) and their tie groups.

    Returns ``order: i32[n, d]`` and ``group: i32[n, d]``, the number of distinct values
    (closer than ``FEATURE_THRESHOLD`` counts as equal) below each example's, per feature.
    On CPU a one-operand integer sort is several times faster than ``argsort``, so when
    ``n * n`` fits in int32 this sorts order-preserving integer keys, takes ranks, and sorts
    ``rank * n + index``.
    """
    n, d = x.shape
    if n * n < 2**31:
        bits = jax.lax.bitcast_convert_type(x, jnp.int32)
        key = jnp.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # int order == float order
        rank = jax.vmap(jnp.searchsorted)(jnp.sort(key.T, axis=1), key.T).astype(jnp.int32)
        order = (jnp.sort(rank * n + jnp.arange(n)[None, :], axis=1) % n).T
    else:
        order = jnp.argsort(x, axis=0, stable=True).astype(jnp.int32)
    xs = jnp.take_along_axis(x, order, axis=0)
    step = (xs[1:] - xs[:-1]) > FEATURE_THRESHOLD
    sorted_group = jnp.concatenate([jnp.zeros((1, d), jnp.int32), jnp.cumsum(step, 0, jnp.int32)])
    group = jnp.zeros((n, d), jnp.int32).at[order, jnp.arange(d)[None, :]].set(sorted_group)
    return order, group


# --- fit / predict ---------------------------------------------------------------------------


def _capacity(n: int, max_depth: int | None, min_samples_leaf: int) -> tuple[int, int]:
    """(node slots M, slots per level) that no fit can exceed."""
    max_leaves = max(1, n // min_samples_leaf)
    if max_depth is not None:
        max_leaves = min(max_leaves, 2**max_depth)
    return 2 * max_leaves - 1, max_leaves


@functools.partial(
    jax.jit,
    static_argnames=(
        "task",
        "num_classes",
        "criterion",
        "max_depth",
        "min_samples_split",
        "min_samples_leaf",
        "max_features",
    ),
)
def fit_tree(
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    weights: jax.Array | None = None,
    *,
    task: Literal["classification", "regression"] = "classification",
    num_classes: int | None = None,
    criterion: str | None = None,
    max_depth: int | None,
    min_samples_split: int = 2,
    min_samples_leaf: int = 1,
    max_features: MaxFeatures = None,
) -> Tree:
    """Fit one CART tree, as ``sklearn.tree.DecisionTree{Classifier,Regressor}`` would.

    Args:
      x: ``f32[n, d]`` features.
      y: ``i32[n]`` labels in ``[0, num_classes)`` (classification) or ``f32[n]`` targets.
      key: PRNG key for the per-node feature draws (unused when ``max_features`` covers d).
      weights: ``f32[n]`` sample weights, or None for ones; examples of weight 0 are left out
        entirely (bootstrap counts are weights).
      task, num_classes, criterion: ``'gini'`` (default) or ``'entropy'`` for classification,
        ``'squared_error'`` for regression. All settings are static under ``jit``.
      max_depth: the deepest level (root 0), or None to grow until the leaves are pure.
      min_samples_split, min_samples_leaf: as in scikit-learn (counts of examples).
      max_features: features drawn per node: None (all), an int, a fraction, 'sqrt', 'log2'.

    Returns:
      A ``Tree`` with ``min(2 ** (max_depth + 1), 2 * (n // min_samples_leaf)) - 1`` slots.
      Vmappable over ``key`` and ``weights``.
    """
    criterion = _check_settings(
        task, criterion, num_classes, max_depth, min_samples_split, min_samples_leaf
    )
    x = jnp.asarray(x, jnp.float32)
    return _grow(
        x,
        y,
        key,
        weights,
        _presort(x),
        task=task,
        num_classes=num_classes,
        criterion=criterion,
        max_depth=max_depth,
        min_samples_split=min_samples_split,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
    )


def _grow(
    x,
    y,
    key,
    weights,
    presorted,
    *,
    task,
    num_classes,
    criterion,
    max_depth,
    min_samples_split,
    min_samples_leaf,
    max_features,
) -> Tree:
    """``fit_tree`` given ``_presort(x)`` (shared by all the trees of a forest)."""
    n, d = x.shape
    mf = resolve_max_features(max_features, d)
    capacity, width = _capacity(n, max_depth, min_samples_leaf)
    depth_limit = n if max_depth is None else max_depth
    min_count = max(min_samples_split, 2 * min_samples_leaf)
    w = jnp.ones(n, jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    if task == "classification":
        y = jnp.asarray(y, jnp.int32)
        stat = w[:, None] * jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
        columns, split_classes = (y, w), num_classes
        y_shift = jnp.zeros((), jnp.float32)
    else:
        y = jnp.asarray(y, jnp.float32)
        y_shift = y.mean()  # centred targets keep the f32 sums of y and y^2 accurate
        yc = y - y_shift
        stat = jnp.stack([w, w * yc, w * yc * yc], axis=1)
        columns, split_classes = (w, w * yc), None

    order, group = presorted
    node = jnp.where(w > 0, 0, width).astype(jnp.int32)  # the root holds weight > 0
    order, seg, seg_start, counts = _repartition(
        order, node, jnp.zeros(n, jnp.int32), jnp.zeros(width + 1, jnp.int32), width
    )
    slots = jnp.arange(width, dtype=jnp.int32)
    tree = dict(
        feature=jnp.full(capacity, -1, jnp.int32),
        threshold=jnp.zeros(capacity, jnp.float32),
        left=jnp.full(capacity, -1, jnp.int32),
        right=jnp.full(capacity, -1, jnp.int32),
        value=jnp.zeros((capacity, stat.shape[1] if task == "classification" else 1)),
        impurity=jnp.zeros(capacity, jnp.float32),
        weighted_n_node_samples=jnp.zeros(capacity, jnp.float32),
        n_node_samples=jnp.zeros(capacity, jnp.int32),
        depth=jnp.zeros(capacity, jnp.int32),
    )
    find_splits = functools.partial(
        _find_splits,
        x,
        group,
        columns,
        criterion=criterion,
        num_classes=split_classes,
        min_leaf=min_samples_leaf,
        max_features=mf,
    )

    def grow_level(state):
        """Record one level's nodes, split those that can, and lay out the next level."""
        order, seg, seg_start, counts, node, node_id, next_id, level, tree = state
        live = counts > 0
        totals = jax.ops.segment_sum(stat, node, width)
        impurity, weight, value = _impurity_and_value(criterion, totals)
        if task == "classification":
            pure = (totals > 0).sum(-1) <= 1
        else:
            pure = jax.ops.segment_max(y, node, width) <= jax.ops.segment_min(y, node, width)
        tree = _write(
            tree,
            jnp.where(live, node_id, capacity),
            value=value,
            impurity=impurity,
            weighted_n_node_samples=weight,
            n_node_samples=counts,
            depth=jnp.full(width, level),
        )
        can_split = live & (counts >= min_count) & ~pure & (level < depth_limit)

        def split_level(_):
            feature, threshold, split = find_splits(
                order, seg, seg_start, counts, totals, can_split, jax.random.fold_in(key, level)
            )
            # Route examples to children 2r / 2r + 1 of the r-th split slot; the rest leave.
            rank = jnp.cumsum(split, dtype=jnp.int32) - 1
            j = jnp.minimum(node, width - 1)
            right = x[jnp.arange(n), feature[j]] > threshold[j]
            new_node = jnp.where((node < width) & split[j], 2 * rank[j] + right, width)
            layout = _repartition(order, new_node, seg, seg_start, width)
            return feature, threshold, split, rank, new_node, layout

        def stop(_):  # no node can split: the loop ends after this level
            nothing = jnp.zeros(width, jnp.int32)
            layout = (order, seg, seg_start, nothing)
            no_split = jnp.zeros(width, bool)
            return nothing, jnp.zeros(width), no_split, nothing, jnp.full(n, width), layout

        feature, threshold, split, rank, new_node, layout = jax.lax.cond(
            can_split.any(), split_level, stop, None
        )
        child = next_id + 2 * rank
        tree = _write(
            tree,
            jnp.where(split, node_id, capacity),
            feature=feature,
            threshold=threshold,
            left=child,
            right=child + 1,
        )
        next_ids = next_id + 2 * split.sum(dtype=jnp.int32)
        return (*layout, new_node, next_id + slots, next_ids, level + 1, tree)

    # Loop state: the sorted layout, each example's slot, each slot's node id, counters.
    state = (order, seg, seg_start, counts, node, slots, jnp.int32(1), jnp.int32(0), tree)
    state = jax.lax.while_loop(lambda s: (s[3] > 0).any(), grow_level, state)
    tree = state[-1]
    split = tree["left"] >= 0
    weighted_impurity = tree["weighted_n_node_samples"] * tree["impurity"]
    decrease = (
        weighted_impurity
        - weighted_impurity[jnp.maximum(tree["left"], 0)]
        - weighted_impurity[jnp.maximum(tree["right"], 0)]
    )
    root_weight = jnp.maximum(tree["weighted_n_node_samples"][0], 1e-30)
    tree["value"] = tree["value"] + y_shift
    return Tree(
        **tree,
        is_leaf=~split,
        impurity_decrease=jnp.where(split, decrease, 0.0) / root_weight,
        num_features=d,
    )


@jax.jit
def apply_tree(tree: Tree, x: jax.Array) -> jax.Array:
    """The leaf each example reaches: ``x: f32[n, d] -> i32[n]`` node ids."""
    x = jnp.asarray(x, jnp.float32)
    rows = jnp.arange(x.shape[0])

    def descend(node: jax.Array) -> jax.Array:
        goes_left = x[rows, jnp.maximum(tree.feature[node], 0)] <= tree.threshold[node]
        child = jnp.where(goes_left, tree.left[node], tree.right[node])
        return jnp.where(tree.is_leaf[node], node, child)

    node = jnp.zeros(x.shape[0], jnp.int32)
    return jax.lax.while_loop(lambda node: (~tree.is_leaf[node]).any(), descend, node)


@jax.jit
def predict_tree(tree: Tree, x: jax.Array) -> jax.Array:
    """``x: f32[n, d] -> f32[n, K]``: class probabilities, or the prediction (K = 1)."""
    return tree.value[apply_tree(tree, x)]


@jax.jit
def feature_importances(tree: Tree) -> jax.Array:
    """``f32[d]``: total impurity decrease per feature, summing to 1 (0s for a lone leaf),
    like scikit-learn's ``feature_importances_``."""
    feature = jnp.maximum(tree.feature, 0)
    total = jnp.zeros(tree.num_features, jnp.float32).at[feature].add(tree.impurity_decrease)
    norm = total.sum()
    return jnp.where(norm > 0, total / jnp.where(norm > 0, norm, 1.0), 0.0)


# --- forests ---------------------------------------------------------------------------------


@functools.partial(
    jax.jit,
    static_argnames=(
        "n_estimators",
        "bootstrap",
        "task",
        "num_classes",
        "criterion",
        "max_depth",
        "min_samples_split",
        "min_samples_leaf",
        "max_features",
        "trees_per_step",
    ),
)
def fit_forest(
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    weights: jax.Array | None = None,
    *,
    n_estimators: int = 100,
    bootstrap: bool = True,
    task: Literal["classification", "regression"] = "classification",
    num_classes: int | None = None,
    criterion: str | None = None,
    max_depth: int | None,
    min_samples_split: int = 2,
    min_samples_leaf: int = 1,
    max_features: MaxFeatures = "sqrt",
    trees_per_step: int | None = None,
) -> Tree:
    """A random forest: ``fit_tree`` vmapped over per-tree keys and bootstrap weights.

    Each tree sees ``weights`` (ones if None) times multinomial bootstrap counts (n draws with
    replacement, as scikit-learn) when ``bootstrap``; the features are sorted once for all.
    ``trees_per_step``: None fits all trees in one ``vmap`` (best on an accelerator); ``k``
    fits them ``k`` at a time with ``lax.map`` (on CPU, 1 is several times faster). Either
    way tree ``i`` is the same. The other settings are ``fit_tree``'s.

    Returns a ``Tree`` whose arrays have a leading ``[n_estimators]`` axis.
    """
    criterion = _check_settings(
        task, criterion, num_classes, max_depth, min_samples_split, min_samples_leaf
    )
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[0]
    base = jnp.ones(n, jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    fit = functools.partial(
        _grow,
        x,
        y,
        task=task,
        num_classes=num_classes,
        criterion=criterion,
        max_depth=max_depth,
        min_samples_split=min_samples_split,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
    )
    presorted = _presort(x)

    def one_tree(tree_key: jax.Array) -> Tree:
        draw_key, split_key = jax.random.split(tree_key)
        w = base
        if bootstrap:
            draws = jax.random.randint(draw_key, (n,), 0, n)
            w = w * jnp.zeros(n, jnp.float32).at[draws].add(1.0)
        return fit(split_key, w, presorted)

    keys = jax.random.split(key, n_estimators)
    if trees_per_step is None:
        return jax.vmap(one_tree)(keys)
    return jax.lax.map(one_tree, keys, batch_size=None if trees_per_step == 1 else trees_per_step)


@jax.jit
def predict_forest(forest: Tree, x: jax.Array) -> jax.Array:
    """``f32[n, K]``: the trees' probabilities (or predictions) averaged, as scikit-learn."""
    return jax.vmap(predict_tree, in_axes=(0, None))(forest, x).mean(axis=0)


@jax.jit
def forest_feature_importances(forest: Tree) -> jax.Array:
    """``f32[d]``: per-tree importances averaged over trees that split at all, summing to 1."""
    per_tree = jax.vmap(feature_importances)(forest)
    splits = ~forest.is_leaf[:, 0]
    mean = (per_tree * splits[:, None]).sum(0) / jnp.maximum(splits.sum(), 1)
    norm = mean.sum()
    return jnp.where(norm > 0, mean / jnp.where(norm > 0, norm, 1.0), 0.0)


__all__ = [
    "Tree",
    "apply_tree",
    "feature_importances",
    "fit_forest",
    "fit_tree",
    "forest_feature_importances",
    "predict_forest",
    "predict_tree",
    "resolve_max_features",
]
