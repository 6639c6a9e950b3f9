"""Differential privacy shared by every verb: accounting, DP-SGD aggregation, Poisson sampling.

Nothing here depends on federated learning; ``jaxtrain.federated.privacy`` and a centralised
DP-SGD step both use it. See docs/privacy.md.
"""

from jaxtrain.privacy.accounting import (
    ADJACENCY,
    calibrate_noise,
    delta_warning,
    dp_event,
    epsilon,
    epsilons,
)
from jaxtrain.privacy.dpsgd import private_gradient
from jaxtrain.privacy.sampling import poisson_sample

__all__ = [
    "ADJACENCY",
    "calibrate_noise",
    "delta_warning",
    "dp_event",
    "epsilon",
    "epsilons",
    "poisson_sample",
    "private_gradient",
]
