"""Vmapped hyperparameter sweeps: a whole search as one XLA program per group of shapes."""

from jaxtrain.sweep.custom import PopulationResult, grid, train_population, vmap_sweep
from jaxtrain.sweep.population import (
    init_population,
    make_population_eval,
    make_population_train,
    member_mesh,
    with_hyperparams,
)
from jaxtrain.sweep.runner import run_sweep
from jaxtrain.sweep.space import Group, Member, expand

__all__ = [
    "Group",
    "Member",
    "PopulationResult",
    "expand",
    "grid",
    "init_population",
    "make_population_eval",
    "make_population_train",
    "member_mesh",
    "run_sweep",
    "train_population",
    "vmap_sweep",
    "with_hyperparams",
]
