"""A dataset of the demo plugin: three Gaussian blobs in 5 dimensions (seeded, 240 rows)."""

from __future__ import annotations

import numpy as np


def load_blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 80)
    centres = rng.normal(0, 3, (3, 5))
    inputs = centres[labels] + rng.normal(0, 1, (240, 5))
    return inputs.astype(np.float32), labels
