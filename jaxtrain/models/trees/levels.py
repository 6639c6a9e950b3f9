"""One level of growth: every node's best split, found by one scan over sorted features."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtrain.models.trees.tree import FEATURE_THRESHOLD, INVALID, proxy, stats_at

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


def repartition(order, new_node, seg, seg_start, width):
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
    the node, ``INVALID`` that it varies but no threshold leaves ``min_samples_leaf``
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
        stats = stats_at(cols, num_classes)
        left = jnp.where(first, stats, left + stats)
        score = jnp.where(
            use == 2,
            proxy(criterion, left, total[:, None] - left),
            jnp.where(use == 1, INVALID, -jnp.inf),
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


def find_splits(
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
    split = can_split & (best[slots, feature] > INVALID)
    p = jnp.clip(at[slots, feature], 0, n - 2)
    lo, hi = x[order[p, feature], feature], x[order[p + 1, feature], feature]
    mid = lo / 2 + hi / 2
    threshold = jnp.where(mid < hi, mid, lo)  # the midpoint, unless it rounds up to hi
    return feature, threshold, split


def write_nodes(tree: dict, ids: jax.Array, **columns: jax.Array) -> dict:
    """``tree[name][ids] = column`` for each column; ids out of range are dropped."""
    return tree | {name: tree[name].at[ids].set(col, mode="drop") for name, col in columns.items()}


def presort(x: jax.Array) -> tuple[jax.Array, jax.Array]:
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
