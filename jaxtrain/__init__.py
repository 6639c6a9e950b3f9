"""jaxtrain: a JAX research toolkit for training models.

The public API, by layer (see README "Python API"):

- config:  ``load_config``, ``Config`` and its sections, ``ConfigError``
- data:    ``prepare_data``, ``load_tfds``, ``load_table``, ``train_batches``,
           ``eval_batches``, ``stratified_split``, ``random_split``, ``grouped_split``,
           ``kfold_indices``, ``find_label_errors``, ``confident_learning``,
           ``write_data_report``, ``fit_normalizer``, ``DatasetError``
- models:  ``build_model``, ``MLP``, ``CNN``, ``ResNet``, ``Linear``, ``TransformerLM``,
           ``ViT``, ``generate``, ``fit_least_squares``, ``fit_tree``, ``fit_forest``
- train:   ``TrainState``, ``create_train_state``, ``build_optimizer``, ``make_train_step``,
           ``make_eval_step``, ``make_fused_steps``, ``build_placement``, ``Placement``,
           ``train_and_evaluate``, callbacks, ``enable_compilation_cache``
- metrics: ``confusion_matrix``, ``classification_metrics`` and the rest of
           ``jaxtrain.metrics`` (ranking, probabilistic, regression, fairness, bootstrap)
- transfer: ``build_transfer``, ``load_pretrained``, ``LoRAModel``, ``merge_lora``,
           ``read_weights_file``, ``write_weights_file``, ``TransferError``
- checkpoint / logging / runner: ``Checkpoints``, ``save_checkpoint``,
           ``restore_checkpoint``, ``MetricWriter``, ``RunOutputs``, ``Progress``, ``train``,
           ``evaluate_run``, ``generate_text``, ``compare_runs``
- open toolkit (docs/library.md): ``fit`` (your Flax linen/NNX module, data and optax
           transformation through the whole ``train`` run), ``register_model``,
           ``register_optimizer``, ``register_dataset``, ``ModelSpec``, ``OptimizerSpec``,
           ``DatasetSpec``, ``vmap_sweep``, ``sweep_model``, ``grid``
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Imported lazily (PEP 562) so that `jaxtrain --help`
# and light uses do not pay for importing JAX, TFDS and Orbax.
_EXPORTS = {
    "build_model": "jaxtrain.models",
    "build_optimizer": "jaxtrain.train",
    "build_placement": "jaxtrain.train",
    "enable_compilation_cache": "jaxtrain.compilation_cache",
    "make_fused_steps": "jaxtrain.train",
    "Placement": "jaxtrain.train",
    "train_index_batches": "jaxtrain.data",
    "build_schedule": "jaxtrain.train",
    "Callback": "jaxtrain.train",
    "Checkpoints": "jaxtrain.checkpoint",
    "classification_metrics": "jaxtrain.metrics",
    "CNN": "jaxtrain.models",
    "Config": "jaxtrain.config",
    "ConfigError": "jaxtrain.config",
    "confusion_matrix": "jaxtrain.metrics",
    "create_train_state": "jaxtrain.train",
    "DatasetError": "jaxtrain.data",
    "eval_batches": "jaxtrain.data",
    "evaluate": "jaxtrain.train",
    "evaluate_run": "jaxtrain.runner",
    "fit_normalizer": "jaxtrain.data",
    "load_config": "jaxtrain.config",
    "load_tfds": "jaxtrain.data",
    "make_eval_step": "jaxtrain.train",
    "make_train_step": "jaxtrain.train",
    "MetricWriter": "jaxtrain.logging",
    "MLP": "jaxtrain.models",
    "prepare_data": "jaxtrain.data",
    "stop_at_step": "jaxtrain.train",
    "stop_on_signals": "jaxtrain.train",
    "stratified_split": "jaxtrain.data",
    "train_and_evaluate": "jaxtrain.train",
    "train_batches": "jaxtrain.data",
    "TrainState": "jaxtrain.train",
    "write_report": "jaxtrain.logging",
    "ResNet": "jaxtrain.models",
    "Linear": "jaxtrain.models",
    "TransformerLM": "jaxtrain.models",
    "ViT": "jaxtrain.models",
    "generate": "jaxtrain.models",
    "fit_least_squares": "jaxtrain.models",
    "fit_tree": "jaxtrain.models.trees",
    "fit_forest": "jaxtrain.models.trees",
    "predict_tree": "jaxtrain.models.trees",
    "predict_forest": "jaxtrain.models.trees",
    "generate_text": "jaxtrain.runner",
    "Task": "jaxtrain.train.tasks",
    "task_for": "jaxtrain.train.tasks",
    "fit_and_evaluate": "jaxtrain.train.fit",
    "load_table": "jaxtrain.data",
    "find_label_errors": "jaxtrain.data",
    "confident_learning": "jaxtrain.data",
    "kfold_indices": "jaxtrain.data",
    "grouped_split": "jaxtrain.data",
    "random_split": "jaxtrain.data",
    "write_data_report": "jaxtrain.data",
    "learning_curve_run": "jaxtrain.runner",
    "check_determinism": "jaxtrain.runner",
    "run_sweep": "jaxtrain.sweep",
    "sweep_run": "jaxtrain.runner",
    "run_federated": "jaxtrain.federated",
    "federated_run": "jaxtrain.runner",
    "build_transfer": "jaxtrain.transfer",
    "load_pretrained": "jaxtrain.transfer",
    "LoRAModel": "jaxtrain.transfer",
    "merge_lora": "jaxtrain.transfer",
    "read_weights_file": "jaxtrain.transfer",
    "write_weights_file": "jaxtrain.transfer",
    "TransferError": "jaxtrain.transfer",
    "fit": "jaxtrain.api",
    "register_model": "jaxtrain.registry",
    "register_optimizer": "jaxtrain.registry",
    "register_dataset": "jaxtrain.registry",
    "ModelSpec": "jaxtrain.registry",
    "OptimizerSpec": "jaxtrain.registry",
    "DatasetSpec": "jaxtrain.registry",
    "save_checkpoint": "jaxtrain.checkpoint",
    "restore_checkpoint": "jaxtrain.checkpoint",
    "vmap_sweep": "jaxtrain.sweep.custom",
    "sweep_model": "jaxtrain.api",
    "grid": "jaxtrain.sweep.custom",
    "compare_runs": "jaxtrain.compare",
    "RunOutputs": "jaxtrain.logging.outputs",
    "Progress": "jaxtrain.logging.progress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxtrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
