"""Benchmark one federated round: the vmapped round vs a Python loop over clients.

Run: ``.venv/bin/python scripts/bench_federated.py [--clients 100] [--repeats 10] [--block 5]``.

Setting: ``configs/digits_federated.yaml`` with an IID partition over ``--clients`` clients,
all of them in the round (one local epoch, batch 10, so two steps per client), in one
process:

(a) the round as jaxtrain runs it: one jitted program (``jax.vmap`` of the clients' local
    training, the weighted mean and the server update);
(b) the way one writes it without vmap: for each client, a fresh optimizer state, then a
    Python loop over its batches calling the jitted ``make_train_step`` (padded batches with
    per-example weights, so one compiled shape), then a jitted weighted accumulation of its
    model, and the server update;
(c) for reference, a loop over clients calling the jitted per-client ``local_train`` (the
    very function (a) vmaps).

Each is warmed up (compiled) first, then timed in blocks of ``--block`` calls back to back
(a simulation runs its rounds back to back), the blocks of (a), (b) and (c) interleaved
``--repeats`` times so a change in the machine's load slows all three alike. The headline
medians are over the calls after each block's first: the steady state of a run of rounds.
Each block's first call, made right after another method had the machine, is reported too:
on a VM it pays for waking the idle second core (measured: a round after a 50 ms pause took
9.6 ms instead of 3.1 ms), which a run of rounds pays once. The last line is
``round_vs_loop: X.XX``, (b)'s steady-state median over (a)'s.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.data import prepare_data  # noqa: E402
from jaxtrain.federated import Client, build_federated, make_local_train  # noqa: E402
from jaxtrain.train import TrainState, build_optimizer, make_train_step  # noqa: E402


def _median_seconds(fns, repeats: int, block: int) -> tuple[list[float], list[float]]:
    """Per function: the median wall time of a call in the steady state (calls 2..block of
    each block) and of a block's first call. Blocks are interleaved, so a busy machine slows
    all of them alike. Each function is warmed up (compiled) first."""
    for fn in fns:
        jax.block_until_ready(fn())
    steady, first = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for fn, steady_times, first_times in zip(fns, steady, first, strict=True):
            for call in range(block):
                started = time.perf_counter()
                jax.block_until_ready(fn())
                spent = time.perf_counter() - started
                (steady_times if call else first_times).append(spent)
    median = statistics.median
    return [median(spent) for spent in steady], [median(spent) for spent in first]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--block", type=int, default=5, help="calls back to back per block")
    args = parser.parse_args()
    n = args.clients
    config = load_config(
        ROOT / "configs" / "digits_federated.yaml",
        [
            "federated.partition=iid",
            f"federated.num_clients={n}",
            f"federated.clients_per_round={n}",
            "federated.local_epochs=1",
        ],
    )
    data = prepare_data(config.data)
    pieces = build_federated(config, data)
    batch_size = config.data.batch_size
    clients, server = pieces.clients, pieces.server
    sizes = np.asarray(clients.sizes)
    weights = sizes / sizes.sum()
    print(
        f"{n} clients, {sizes.min()}-{sizes.max()} examples each, batch {batch_size}, "
        f"{pieces.local_steps} local steps; devices {jax.devices()}"
    )

    # (a) the vmapped round
    def vmapped():
        return pieces.run_round(server, clients)[0].params

    # (b) loop over clients, loop over batches calling the jitted train step
    tx = build_optimizer(config.optimizer, pieces.local_steps)
    train_step = jax.jit(make_train_step(pieces.model, tx, pieces.task))
    init_opt = jax.jit(tx.init)

    @jax.jit
    def accumulate(total, params, weight):
        return jax.tree.map(lambda t, p: t + weight * p, total, params)

    keys = [jax.random.key(k) for k in range(n)]
    host_inputs, host_labels = np.asarray(clients.inputs), np.asarray(clients.labels)
    batches = []  # per client: its batches, padded to batch_size with zero-weight rows
    for k in range(n):
        order = np.random.default_rng(k).permutation(sizes[k])
        per_client = []
        for b in range(math.ceil(sizes[k] / batch_size)):
            rows = order[b * batch_size : (b + 1) * batch_size]
            pad = batch_size - len(rows)
            mask = np.r_[np.ones(len(rows)), np.zeros(pad)].astype(np.float32)
            rows = np.r_[rows, np.zeros(pad, int)]
            per_client.append(
                {
                    "inputs": jnp.asarray(host_inputs[k, rows]),
                    "labels": jnp.asarray(host_labels[k, rows]),
                    "weights": jnp.asarray(mask * batch_size / mask.sum()),
                }
            )
        batches.append(per_client)

    def step_loop():
        total = jax.tree.map(jnp.zeros_like, server.params)
        for k in range(n):
            state = TrainState(
                jnp.int32(0), server.params, init_opt(server.params), server.model_state, keys[k]
            )
            for batch in batches[k]:
                state, _ = train_step(state, batch)
            total = accumulate(total, state.params, weights[k])
        return total  # FedAvg with server lr 1: the weighted mean of the clients' models

    # (c) loop over clients calling the jitted per-client local training
    local_train = jax.jit(
        make_local_train(
            partial(make_train_step, pieces.model, tx, pieces.task),
            tx,
            padded_size=clients.inputs.shape[1],
            batch_size=batch_size,
            local_epochs=1,
        )
    )
    per_client = [Client(clients.inputs[k], clients.labels[k], clients.sizes[k]) for k in range(n)]

    def client_loop():
        total = jax.tree.map(jnp.zeros_like, server.params)
        for k in range(n):
            result = local_train(server.params, server.model_state, per_client[k], keys[k])
            total = accumulate(total, result.params, weights[k])
        return total

    (round_s, step_loop_s, client_loop_s), firsts = _median_seconds(
        [vmapped, step_loop, client_loop], args.repeats, max(args.block, 2)
    )
    # Same data and algorithm; the client shuffles differ, so the models agree only roughly.
    gap = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(vmapped()), jax.tree.leaves(step_loop()), strict=True)
    )
    print(f"(a) vmapped round:                       {1000 * round_s:8.2f} ms")
    print(f"(b) loop over clients, jitted train_step: {1000 * step_loop_s:8.2f} ms")
    print(f"(c) loop over clients, jitted local_train: {1000 * client_loop_s:8.2f} ms")
    print(
        "first call of a block (after another method): "
        + ", ".join(f"({m}) {1000 * f:.2f} ms" for m, f in zip("abc", firsts, strict=True))
        + f"; (b)/(a) {firsts[1] / firsts[0]:.2f}"
    )
    print(f"max |params (a) - params (b)|: {gap:.2e} (different shuffles)")
    print(f"round_vs_client_loop: {client_loop_s / round_s:.2f}")
    print(f"round_vs_loop: {step_loop_s / round_s:.2f}")


if __name__ == "__main__":
    main()
