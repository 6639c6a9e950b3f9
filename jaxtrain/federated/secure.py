"""Secure aggregation, simulated: pairwise masks that cancel in the server's sum.

As in Bonawitz et al. (2017), without dropouts and key agreement: every pair of clients
``(a, b)``, ``a < b``, shares a seed; ``a`` adds the mask the seed expands to and ``b``
subtracts it. Each message alone looks uniformly random, the sum of all messages is the sum
of the updates. To make the cancellation exact (floats would not cancel bit for bit), updates
are encoded in fixed point, ``round(x * 2**fraction_bits)`` as int32 viewed as uint32, and
masked and summed modulo 2**32; the server decodes the sum back to float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.federated.aggregate import Aggregator, Cohort, Metrics, Tree

FRACTION_BITS = 20  # resolution 1e-6; |each message| and |their sum| must stay below 2**11


def to_fixed_point(tree: Tree, fraction_bits: int = FRACTION_BITS) -> Tree:
    """float32 -> uint32 (two's complement of ``round(x * 2**fraction_bits)``), saturating."""
    limit = 2.0**31 - 2.0**8  # the largest float32 below 2**31, so the cast never overflows

    def encode(x):
        scaled = jnp.clip(jnp.round(x * 2.0**fraction_bits), -limit, limit)
        return jax.lax.bitcast_convert_type(scaled.astype(jnp.int32), jnp.uint32)

    return jax.tree.map(encode, tree)


def from_fixed_point(tree: Tree, fraction_bits: int = FRACTION_BITS) -> Tree:
    """uint32 (a sum modulo 2**32 of :func:`to_fixed_point` values) -> float32."""

    def decode(x):
        signed = jax.lax.bitcast_convert_type(x, jnp.int32)
        return signed.astype(jnp.float32) / 2.0**fraction_bits

    return jax.tree.map(decode, tree)


def pair_mask(like: Tree, key: jax.Array, low: jax.Array, high: jax.Array) -> Tree:
    """The uint32 mask shared by clients ``low < high``: seeded per pair from the round key."""
    pair_key = jax.random.fold_in(jax.random.fold_in(key, low), high)
    leaves, treedef = jax.tree.flatten(like)
    sizes = [x.size for x in leaves]
    bits = jax.random.bits(pair_key, (sum(sizes),), jnp.uint32)  # one draw: cheap to compile
    chunks = jnp.split(bits, np.cumsum(sizes)[:-1])
    masks = [c.reshape(x.shape) for c, x in zip(chunks, leaves, strict=True)]
    return jax.tree.unflatten(treedef, masks)


def client_masks(like: Tree, ids: jax.Array, key: jax.Array) -> Tree:
    """Each client's total mask ``[M, ...]``: ``+mask(a, b)`` for partners ``b`` above it,
    ``-mask(a, b)`` for those below; their sum over the cohort is 0 modulo 2**32."""

    def total_for(me: jax.Array) -> Tree:
        def add_partner(j, acc):
            other = ids[j]
            mask = pair_mask(like, key, jnp.minimum(me, other), jnp.maximum(me, other))
            sign = jnp.where(me < other, 1, jnp.where(me > other, -1, 0)).astype(jnp.int32)
            signed = jax.lax.bitcast_convert_type(sign, jnp.uint32)  # -1 is 2**32 - 1
            return jax.tree.map(lambda a, m: a + signed * m, acc, mask)

        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.uint32), like)
        return jax.lax.fori_loop(0, ids.shape[0], add_partner, zeros)

    return jax.vmap(total_for)(ids)


def secure_aggregation(fraction_bits: int = FRACTION_BITS) -> Aggregator:
    """Clients send fixed-point updates plus pairwise masks; the server decodes the sum.

    The decoded sum equals the sum of the unmasked fixed-point updates exactly; it differs
    from the float sum by at most ``M / 2**(fraction_bits + 1)`` per coordinate. Cost: every
    client expands ``M - 1`` masks the size of the model per round.
    """

    def encode(updates: Tree, cohort: Cohort, key: jax.Array) -> tuple[Tree, Metrics]:
        fixed = to_fixed_point(updates, fraction_bits)
        one_client = jax.tree.map(lambda x: x[0], updates)
        masks = client_masks(one_client, cohort.ids, key)
        return jax.tree.map(jnp.add, fixed, masks), {}

    def decode(total: Tree, _cohort: Cohort, _key: jax.Array) -> tuple[Tree, Metrics]:
        return from_fixed_point(total, fraction_bits), {}

    return Aggregator(encode, decode)
