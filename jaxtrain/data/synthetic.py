"""A synthetic credit-approval dataset with a known, documented bias, for fairness experiments.

The story: applicants belong to one of two groups (the sensitive attribute ``group``; group 0
is the 30 % minority). Their creditworthiness (``merit``) comes from four financial features
drawn from the *same* distribution in both groups, so a fair decision approves both groups at
the same rate. The historical decisions used as labels, however, subtracted a fixed
``HISTORICAL_PENALTY`` from the merit of every group-0 applicant. A fifth feature,
``neighbourhood``, has no effect on merit but is strongly correlated with the group: it is the
proxy through which a model trained on the biased labels learns the bias even without seeing
``group``.

The generative model, with e1..e5, eps independent standard normals:

    group          ~ Bernoulli(1 - GROUP_0_SHARE)          (0 minority, 1 majority)
    income         = e1
    debt_ratio     = e2
    credit_history = e3
    savings        = e4
    neighbourhood  = PROXY_SHIFT * group + PROXY_NOISE * e5
    merit          = MERIT_WEIGHTS . (income, debt_ratio, credit_history, savings)
    fair_label     = [merit + LABEL_NOISE * eps > 0]
    label          = [merit - HISTORICAL_PENALTY * (group == 0) + LABEL_NOISE * eps > 0]

With the constants below the fair approval rate is 50 % in both groups, while the historical
``label`` approves about 50 % of group 1 and about 30 % of group 0.

Only additions, multiplications and comparisons of NumPy's PCG64 normals go into the data, so
the same seed gives the same bytes on every platform (for a given NumPy bit-stream, which
NumPy keeps stable across releases).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

# The bias and the data, as documented above.
N_EXAMPLES = 4000
SEED = 1234
GROUP_0_SHARE = 0.3
FEATURE_NAMES = ("income", "debt_ratio", "credit_history", "savings", "neighbourhood")
MERIT_WEIGHTS = (1.0, -0.8, 0.6, 0.4)  # income, debt_ratio, credit_history, savings
PROXY_SHIFT = 1.0
PROXY_NOISE = 0.5
LABEL_NOISE = 0.5
HISTORICAL_PENALTY = 0.8
LABEL_NAMES = ("rejected", "approved")


def make_biased_credit(n: int = N_EXAMPLES, seed: int = SEED) -> dict[str, np.ndarray]:
    """Draw ``n`` applicants from the documented model (module docstring).

    Returns:
      A dict of NumPy arrays:

      - ``features``: f32[n, 5], columns ``FEATURE_NAMES``.
      - ``group``: i32[n], 0 (minority, penalised) or 1.
      - ``label``: i32[n], the biased historical decision, 1 approved.
      - ``fair_label``: i32[n], the decision without the penalty (same noise).
      - ``merit``: f32[n], the latent creditworthiness.
    """
    if n < 1:
        raise ValueError(f"make_biased_credit: n must be >= 1, got {n}.")
    rng = np.random.default_rng(seed)
    group = (rng.random(n) >= GROUP_0_SHARE).astype(np.int32)
    normals = rng.standard_normal((n, 6))
    financial = normals[:, :4]
    neighbourhood = PROXY_SHIFT * group + PROXY_NOISE * normals[:, 4]
    merit = financial @ np.asarray(MERIT_WEIGHTS)
    noise = LABEL_NOISE * normals[:, 5]
    penalty = HISTORICAL_PENALTY * (group == 0)
    features = np.concatenate([financial, neighbourhood[:, None]], axis=1)
    return {
        "features": features.astype(np.float32),
        "group": group,
        "label": (merit - penalty + noise > 0).astype(np.int32),
        "fair_label": (merit + noise > 0).astype(np.int32),
        "merit": merit.astype(np.float32),
    }


class JaxtrainBiasedCredit(tfds.core.GeneratorBasedBuilder):
    """Synthetic credit approvals, biased against group 0: ``make_biased_credit()`` rows."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "make_biased_credit(4000, seed=1234); penalty 0.8 on group 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Synthetic credit approvals: 5 features (" + ", ".join(FEATURE_NAMES) + "), a "
                f"binary sensitive attribute 'group' (group 0 is {GROUP_0_SHARE:.0%}), and "
                f"historical labels that penalise group 0 by {HISTORICAL_PENALTY} merit units. "
                "'neighbourhood' is a proxy for the group. See jaxtrain.data.synthetic."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(len(FEATURE_NAMES),), dtype=np.float32),
                    "group": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "label": tfds.features.ClassLabel(names=list(LABEL_NAMES)),
                }
            ),
            supervised_keys=("features", "label"),
            disable_shuffling=True,  # row i is make_biased_credit() row i
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        data = make_biased_credit()
        for index in range(N_EXAMPLES):
            yield (
                index,
                {
                    "features": data["features"][index],
                    "group": int(data["group"][index]),
                    "label": int(data["label"][index]),
                },
            )
