"""Population-based training between evaluations: the worst copy the best, then explore."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxtrain.sweep import population as pop

_BOUNDED = {"b1", "b2", "momentum"}  # PBT keeps these below 1


def exploit_explore(state, order, active, records, sweep, swept, step, group_index) -> Any:
    """The worst ``sweep.pbt.fraction`` of members (by ``order``, best first) copy the state
    of a member from the best fraction (keeping their own key), then multiply each swept
    optimizer setting by a factor drawn from ``sweep.pbt.perturb``; each copy is recorded in
    the member's ``pbt`` history. Seeded by ``(sweep.seed, group, step)``."""
    rng = np.random.default_rng([sweep.seed, group_index, step])
    n = len(active)
    q = max(1, int(n * sweep.pbt.fraction))
    sources = list(range(n))
    for p in order[n - q :]:
        sources[p] = order[int(rng.integers(0, q))]
    copied = pop.take(state, sources).replace(rng=state.rng)
    values = jax.device_get(pop.hyperparams(copied))
    changed = {name: np.array(values[name]) for name in swept}
    for p in order[n - q :]:
        for name in swept:
            factor = float(rng.choice(sweep.pbt.perturb))
            value = changed[name][p] * factor
            changed[name][p] = min(value, 0.9999) if name in _BOUNDED else value
        records[active[p]]["pbt"].append(
            {
                "step": step,
                "copied": active[sources[p]],
                **{name: float(changed[name][p]) for name in swept},
            }
        )
    return pop.with_hyperparams(copied, changed)
