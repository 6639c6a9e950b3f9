"""DP-SGD for ``jaxtrain train`` (``train.dp``): the run's privacy plan and its account.

The plan fixes what the step and the stream need before training starts: the sampling rate
``q = data.batch_size / n``, the slots a Poisson batch is padded to, the number of steps, and
the noise multiplier (given, or calibrated to ``target_epsilon`` for exactly those steps).
The account is dp-accounting's (``jaxtrain.privacy.accounting``) for the sampling the stream
implements: Poisson, add or remove one example; truncated at ``slots`` (PLD) when the slots
are fewer than the examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxtrain.config import Config
from jaxtrain.data.poisson import default_slots
from jaxtrain.privacy import accounting
from jaxtrain.train.step import PrivateGradient


@dataclass(frozen=True)
class PrivacyPlan:
    """``population`` n training examples, ``rate`` q, ``slots`` per batch, ``steps``, the
    ``noise_multiplier`` sigma and where it came from, and the account's settings."""

    population: int
    rate: float
    slots: int
    steps: int
    clip_norm: float
    noise_multiplier: float
    noise_source: str
    delta: float
    accountant: str
    expected_batch_size: float

    @property
    def gradient(self) -> PrivateGradient:
        return PrivateGradient(self.clip_norm, self.noise_multiplier, self.expected_batch_size)

    def _account(self) -> dict[str, Any]:
        truncated = self.slots < self.population
        return {
            "sampling": "poisson",
            "accountant": self.accountant,
            "population": self.population,
            "max_sample": self.slots if truncated else None,
        }

    def epsilon(self, steps: int) -> float:
        """Epsilon at ``delta`` after ``steps`` steps."""
        return accounting.epsilon(
            self.noise_multiplier, self.rate, steps, self.delta, **self._account()
        )

    def epsilons(self, steps: list[int]) -> list[float]:
        """:meth:`epsilon` at each of ``steps`` (one incremental account)."""
        return accounting.epsilons(
            self.noise_multiplier, self.rate, steps, self.delta, **self._account()
        )

    def curve(self, every: int) -> dict[int, float]:
        """Epsilon after every ``every`` steps and after the last (what validation logs)."""
        points = sorted({*range(every, self.steps, every), self.steps})
        return dict(zip(points, self.epsilons(points), strict=True))

    def report(self, steps: int) -> dict[str, Any]:
        """What metrics.json and report.md say: mechanism, adjacency, sampling, accountant,
        (epsilon, delta), and what is outside the guarantee."""
        epsilon = self.epsilon(steps)
        entries = {
            "mechanism": "DP-SGD: per-example clipping, Gaussian noise on the sum",
            "adjacency": accounting.ADJACENCY["poisson"],
            "sampling": f"Poisson, q = {self.rate:.4g} ({self.expected_batch_size:g} of "
            f"{self.population} examples expected per step; batches padded to {self.slots}"
            + (", larger draws truncated" if self.slots < self.population else "")
            + ")",
            "accountant": f"{self.accountant} (dp-accounting {accounting.library_version()})",
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "noise_source": self.noise_source,
            "steps": steps,
            "epsilon": epsilon,
            "delta": self.delta,
            "outside_the_guarantee": [
                "training-batch metrics in metrics.jsonl (loss, accuracy, grad_norm): computed "
                "from raw examples",
                "validation and test metrics: computed on held-out data, not protected",
                "the data normalisation fitted on the training split (data_stats.json)",
            ],
        }
        lines = ["| item | value |", "|---|---|"]
        for key, value in entries.items():
            shown = "; ".join(value) if isinstance(value, list) else value
            lines.append(f"| {key.replace('_', ' ')} | {shown} |")
        return {**entries, "lines": lines}


def privacy_plan(config: Config, train_size: int, steps: int) -> PrivacyPlan | None:
    """The run's plan under ``train.dp`` (None without it); a delta at or above 1/n warns
    once (a mechanism that publishes one example's data meets such a delta)."""
    dp = config.train.dp
    if dp is None:
        return None
    rate = min(1.0, config.data.batch_size / train_size)
    slots = dp.max_batch or (train_size if dp.accountant == "rdp" else None)
    slots = min(slots or default_slots(train_size, rate), train_size)
    truncated = slots if slots < train_size else None
    if dp.target_epsilon is not None:
        sigma = accounting.calibrate_noise(
            dp.target_epsilon, rate, steps, dp.delta, sampling="poisson",
            accountant=dp.accountant, population=train_size, max_sample=truncated,
        )  # fmt: skip
        source = f"calibrated to epsilon {dp.target_epsilon:g} over {steps} steps"
    else:
        sigma, source = float(dp.noise_multiplier), "train.dp.noise_multiplier"
    warning = accounting.delta_warning(dp.delta, train_size)
    if warning:
        accounting.warn_once(warning)
    return PrivacyPlan(train_size, rate, slots, steps, dp.clip_norm, sigma, source, dp.delta,
                       dp.accountant, float(config.data.batch_size))  # fmt: skip
