"""Spreading a dataset over clients, and packing the clients into one padded array.

Partitioners return one sorted index array per client (``list[i64[n_k]]``), deterministic in
their seed. :func:`pack_clients` stacks every client into ``[num_clients, L, ...]`` arrays,
padded to a common length ``L`` with ``sizes`` recording the real counts, so one vmapped
program trains all of them and padding never counts (see ``client.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flax import struct

from jaxtrain.data import ArraySplit

SCHEMES = ("iid", "dirichlet", "shards")


@struct.dataclass
class ClientData:
    """Every client's examples, padded: ``inputs`` [N, L, ...], ``labels`` [N, L, ...] and
    ``sizes`` i32[N] (client ``k`` owns rows ``:sizes[k]``; the rest is zero padding).
    ``L`` is a multiple of the local batch size, so every batch slice stays inside.
    ``weights`` f32[N, L]: per-example loss weights when the training split has them."""

    inputs: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    weights: np.ndarray | None = None

    @property
    def num_clients(self) -> int:
        return int(self.sizes.shape[0])

    def cohort(self, ids):
        """The clients ``ids`` (i32[M]) as one batched :class:`Client` (leading axis M)."""
        from jaxtrain.federated.client import Client

        weights = None if self.weights is None else self.weights[ids]
        return Client(self.inputs[ids], self.labels[ids], self.sizes[ids], weights)


def partition_iid(num_examples: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """A random permutation cut into ``num_clients`` parts whose sizes differ by at most one."""
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def partition_dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Label skew: each class is shuffled and cut by proportions ~ Dirichlet(alpha * 1_N).

    Small ``alpha`` (0.1) gives most clients one or two classes and very different sizes; a
    client may end up empty (it is then never trained, and weighs nothing in FedAvg).
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]


def partition_shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int
) -> list[np.ndarray]:
    """McMahan et al.'s pathological split: sort by label (ties in random order), cut into
    ``num_clients * shards_per_client`` equal shards, deal ``shards_per_client`` to each."""
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ValueError(
            f"federated.shards_per_client: {num_clients} clients x {shards_per_client} shards "
            f"is more shards than the {len(labels)} training examples"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in dealt]


def partition_by_ids(ids: np.ndarray) -> list[np.ndarray]:
    """A natural partition: one client per distinct value of ``ids`` (int[n], e.g. a writer
    or hospital column), clients in increasing id order."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"client ids must be integers, got dtype {ids.dtype}")
    return [np.flatnonzero(ids == value) for value in np.unique(ids)]


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str = "iid",
    *,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    seed: int = 0,
) -> list[np.ndarray]:
    """Client index arrays for a training split with ``labels`` (int[n]) by ``scheme``
    (``iid``, ``dirichlet`` or ``shards``); every example goes to exactly one client."""
    labels = np.asarray(labels)
    if num_clients > len(labels):
        raise ValueError(
            f"federated.num_clients: {num_clients} clients for {len(labels)} training examples"
        )
    if scheme == "iid":
        return partition_iid(len(labels), num_clients, seed)
    if scheme in ("dirichlet", "shards") and labels.ndim != 1:
        raise ValueError(f"federated.partition: {scheme} needs one class label per example")
    if scheme == "dirichlet":
        return partition_dirichlet(labels, num_clients, alpha, seed)
    if scheme == "shards":
        return partition_shards(labels, num_clients, shards_per_client, seed)
    raise ValueError(f"federated.partition: {scheme!r} is not one of {', '.join(SCHEMES)}")


def pack_clients(split: ArraySplit, parts: Sequence[np.ndarray], batch_size: int) -> ClientData:
    """Stack the clients' examples into padded arrays (see :class:`ClientData`); the common
    length is the largest client rounded up to a multiple of ``batch_size``."""
    sizes = np.array([len(p) for p in parts], np.int32)
    length = max(1, math.ceil(max(int(sizes.max()), 1) / batch_size)) * batch_size
    inputs = np.zeros((len(parts), length, *split.inputs.shape[1:]), split.inputs.dtype)
    labels = np.zeros((len(parts), length, *split.labels.shape[1:]), split.labels.dtype)
    weights = None if split.weights is None else np.zeros((len(parts), length), np.float32)
    for k, part in enumerate(parts):
        inputs[k, : len(part)] = split.inputs[part]
        labels[k, : len(part)] = split.labels[part]
        if weights is not None:
            weights[k, : len(part)] = split.weights[part]
    return ClientData(inputs, labels, sizes, weights)


def describe(parts: Sequence[np.ndarray], labels: np.ndarray) -> dict[str, float | int]:
    """Summary of a partition: client sizes and how many classes a client holds."""
    sizes = np.array([len(p) for p in parts])
    classes = np.array([len(np.unique(labels[p])) for p in parts]) if labels.ndim == 1 else sizes
    return {
        "clients": len(parts),
        "empty_clients": int((sizes == 0).sum()),
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
        "classes_per_client_mean": float(classes.mean()),
    }
