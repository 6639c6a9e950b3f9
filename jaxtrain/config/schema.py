"""Typed, frozen experiment configuration.

Every section is a frozen pydantic dataclass that owns its defaults and rejects unknown keys,
wrong types (strict: no silent string-to-number coercion) and impossible values. Sections
that pick an implementation (``model``, ``optimizer``) are tagged unions on their ``name``,
so each implementation accepts exactly its own keys. The unions are open: a name that is not
a built-in is looked up in :mod:`jaxtrain.registry` (registered in Python, an import path
``package.module:Object`` or an installed package's entry point) and validated, just as
strictly, by that family's own section class.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, PlainValidator, Tag, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain import registry
from jaxtrain.config.base import (
    INT32_MAX,
    BatchSize,
    Epochs,
    FiniteFloat,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RunName,
    Seed,
    Small,
    Width,
    capped,
)
from jaxtrain.config.base import STRICT as _STRICT
from jaxtrain.config.distributed import DistributedConfig
from jaxtrain.config.federated import FederatedConfig, dp_model_problem
from jaxtrain.config.prepare import PrepareConfig
from jaxtrain.config.privacy import DPSGDConfig, dp_sgd_problem
from jaxtrain.config.sweep import SweepConfig
from jaxtrain.config.tracking import TrackingConfig
from jaxtrain.config.transfer import TransferConfig

# TFDS's own form of a name (tensorflow_datasets.core.naming): [namespace:]name[/config]
# [:version][/kwargs]; anything else makes TFDS raise before any check of ours could.
TFDS_NAME = re.compile(
    r"^([\w\-]+:)?[a-zA-Z]\w*(/[\w+\-.]+)?(:(\d+|\*)(\.(\d+|\*)){2})?(/(\w+=[^,]+,?)+)?$"
)
SequenceLength = capped(2**20, "a sanity cap: a window of a million bytes", low=2)
MinSamplesSplit = capped(INT32_MAX, "JAX counts examples in 32-bit integers", low=2)
Trees = capped(100_000, "a sanity cap: every tree of the forest is fitted at once, in memory")
Padding = capped(1024, "a sanity cap: pixels of padding on each side", low=0)
Workers = capped(256, "a sanity cap: grain worker processes on one host", low=0)
Prefetch = capped(64, "a sanity cap: batches held ahead of the step", low=0)
StreamAboveMB = capped(2**24, "a sanity cap: 16 TB", low=0)
ShingleWords = capped(1024, "a sanity cap: words in one shingle", low=4)


@dataclass(config=_STRICT)
class DataConfig:
    """Where examples come from and how they are split and batched.

    ``name`` is a dataset bundled with jaxtrain (``digits``, ``breast_cancer``, ``wine``,
    ``iris``, ``diabetes``, ``pydoc_text``), a dataset registered in Python
    (``jaxtrain.register_dataset``), named by import path (``package.module:loader``) or by an
    installed package's ``jaxtrain.datasets`` entry point, or any TFDS catalog name already
    prepared (as array_record) in ``data_dir``. With ``path`` the data is read from that file
    instead and ``name`` only labels it (default: the file's stem): a ``.csv``, ``.parquet`` or
    ``.npy`` (a structured array: named columns) file is a table (see docs/data.md); a ``.npz``
    file holds arrays (``inputs``/``labels`` or ``x``/``y``, optionally per split:
    ``x_train``, ``x_validation``, ``x_test`` ...; read without pickle); any other file is UTF-8
    text, split into train, validation and test at document boundaries, in order, and cut into
    windows of ``sequence_length`` bytes; a directory or a glob (``*``, ``?``, ``[``) is a text
    corpus whose files are its documents. ``validation_path`` and ``test_path`` (tables and
    arrays) are the source's own fixed splits, in the same format as ``path``.

    Streaming (docs/data.md "Streaming"): ``stream`` is ``auto`` (stream a TFDS dataset or a
    text corpus larger than ``stream_above_mb`` on disk, else hold it in memory), ``true`` or
    ``false``. Streamed examples are read lazily, a batch at a time, by ``workers`` grain
    processes (0: in the training process), and ``prefetch`` batches are put on the device
    ahead of the step. Text: ``dedup_passages`` drops, before the split, every paragraph
    that shares a run of ``shingle_words`` words with an earlier document; the leakage check
    reports held-out paragraphs sharing such a run with the training split.

    Table keys (only with a table: a ``.csv``/``.parquet``/``.npy`` path, or a registered
    dataset whose loader returns a DataFrame): ``label_column`` (required);
    ``feature_columns`` (default: every column but the label, group and id columns);
    ``categorical_columns`` (default: the non-numeric feature columns), encoded ``one_hot`` or
    ``ordinal`` with categories learned on the training split, a category unseen there being
    ``ignore``d (all-zero one-hot, ordinal -1), ``drop``ped or an ``error``; ``group_column``
    (rows of one group never sit in two splits); ``id_column`` (kept out of the features);
    ``task`` (default classification); ``class_names`` (the label set; default: the labels
    found, sorted); ``split_column`` (a column naming each row's split: ``train``,
    ``validation`` or ``test``; a split it never names is carved from train as usual).
    ``task`` and ``class_names`` also apply to arrays (``.npz``, registered datasets): integer,
    boolean or text labels are classes, float labels regression targets. ``split``: ``auto``
    is grouped with a group column, else stratified for classes and random for regression.
    ``prepare`` holds the cleaning rules.

    Subsets for transfer learning (classification, applied after the split, seeded by
    ``seed``): ``classes`` keeps only those classes (source label ids or class names) in
    every split, relabelled ``0..k-1`` in the order given; ``train_examples_per_class``
    keeps that many training examples of each class (validation and test stay whole).
    """

    name: Annotated[str, Field(min_length=1)] = ""  # "": the stem of path
    data_dir: str | None = None
    path: str | None = None
    validation_path: str | None = None
    test_path: str | None = None
    sequence_length: SequenceLength = 128
    seed: Seed = 0
    validation_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.2
    normalize: Literal["none", "standard", "minmax"] = "standard"
    batch_size: BatchSize = 64
    eval_batch_size: BatchSize = 512
    label_column: str | None = None
    feature_columns: tuple[str, ...] | None = None
    categorical_columns: tuple[str, ...] | None = None
    encoding: Literal["one_hot", "ordinal"] = "one_hot"
    unknown_categories: Literal["ignore", "drop", "error"] = "ignore"
    group_column: str | None = None
    id_column: str | None = None
    task: Literal["classification", "regression"] | None = None
    class_names: tuple[str, ...] | None = None
    split_column: str | None = None
    split: Literal["auto", "stratified", "grouped", "random"] = "auto"
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    classes: tuple[NonNegativeInt | str, ...] | None = None
    train_examples_per_class: PositiveInt | None = None
    stream: bool | Literal["auto"] = "auto"
    stream_above_mb: StreamAboveMB = 256
    workers: Workers = 0
    prefetch: Prefetch = 2
    dedup_passages: bool = False
    shingle_words: ShingleWords = 13

    @model_validator(mode="after")
    def _name_from_path(self) -> DataConfig:
        """``name`` defaults to the stem of ``path`` (only a label then)."""
        if not self.name:
            if self.path is None:
                raise ValueError(
                    "name: required key is missing (a dataset name; it may be left out only "
                    "with data.path)"
                )
            object.__setattr__(self, "name", Path(self.path).stem or "data")  # frozen: once
        return self

    @model_validator(mode="after")
    def _a_dataset_name(self) -> DataConfig:
        if self.path is not None:
            return self
        tfds = TFDS_NAME.fullmatch(self.name)
        check = registry.is_import_path(self.name) or not tfds  # an import path resolves now
        if check and not self._registered and not tfds:
            raise ValueError(
                f"name: {self.name!r} is not a dataset name (bundled, such as digits, a TFDS "
                "name such as mnist, mnist/config or mnist:3.0.1, a dataset registered with "
                "jaxtrain.register_dataset, or an import path package.module:loader)"
            )
        return self

    @property
    def _registered(self) -> bool:
        """Whether ``name`` is a registered, import-path or entry-point dataset."""
        if self.path is not None:
            return False
        try:
            return registry.find("dataset", self.name) is not None
        except registry.RegistryError as err:
            raise ValueError(f"name: {err}") from None

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "validation_fraction + test_fraction must be below 0.9 so training data remains"
            )
        return self

    @model_validator(mode="after")
    def _table_keys_need_a_table(self) -> DataConfig:
        kind = path_kind(self.path)
        if kind == "pickle":
            raise ValueError(
                f"path: {self.path!r} is a pickle, which jaxtrain never loads (loading one can "
                f"run code); save arrays with numpy.savez instead. {SUPPORTED_FORMATS}"
            )
        table = kind == "table"
        if table and self.label_column is None:
            raise ValueError("label_column: required for a .csv/.parquet/.npy data.path")
        used = [k for k in (*TABLE_KEYS, "group_column", "split_column") if getattr(self, k)]
        if used and not table and not (kind == "arrays" and set(used) <= set(LABEL_KEYS)):
            if not self._registered:
                where = (
                    ".csv/.parquet/.npy data.path (a table)"
                    if used[0] not in LABEL_KEYS
                    else ".csv/.parquet/.npy/.npz data.path"
                )
                raise ValueError(
                    f"{used[0]}: only used with a {where} or a dataset registered in Python"
                )
        for key in ("validation_path", "test_path"):
            other = getattr(self, key)
            if other is None:
                continue
            if self.path is None:
                raise ValueError(f"{key}: needs data.path (the training rows)")
            if kind not in ("table", "arrays") or path_kind(other) != kind:
                raise ValueError(
                    f"{key}: a split file must be a table or arrays in the same format as "
                    f"data.path ({self.path!r}); got {other!r}"
                )
            if self.split_column is not None:
                raise ValueError(
                    f"{key}: the splits are given by data.split_column already; use one or "
                    "the other"
                )
        if table and self.stream is True:
            raise ValueError(
                "stream: a .csv/.parquet/.npy table is read whole (pandas); use stream: auto or "
                "false"
            )
        if self.split == "grouped" and self.group_column is None:
            raise ValueError("split: 'grouped' needs data.group_column")
        if self.group_column is not None and self.split in ("stratified", "random"):
            raise ValueError(f"split: {self.split!r} would ignore group_column; use grouped")
        return self


TABLE_KEYS = (
    "label_column",
    "feature_columns",
    "categorical_columns",
    "id_column",
    "task",
    "class_names",
)
LABEL_KEYS = ("task", "class_names")  # also for arrays
TABLE_SUFFIXES = (".csv", ".parquet", ".npy")
ARRAY_SUFFIXES = (".npz",)
PICKLE_SUFFIXES = (".pkl", ".pickle")
SUPPORTED_FORMATS = (
    "Supported data.path formats: .csv, .parquet, .npy (tables), .npz (arrays), any other "
    "suffix UTF-8 text"
)


def path_kind(path: str | None) -> str | None:
    """What ``data.path`` holds, by its suffix: ``table``, ``arrays``, ``pickle`` (refused),
    ``text`` (anything else), or None without a path."""
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return "table"
    if suffix in ARRAY_SUFFIXES:
        return "arrays"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    return "text"


@dataclass(config=_STRICT)
class MLPConfig:
    """A multi-layer perceptron over the flattened input."""

    name: Literal["mlp"] = "mlp"
    hidden: tuple[Width, ...] = (256, 256)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: Fraction = 0.0


@dataclass(config=_STRICT)
class CNNConfig:
    """A small convolutional network: conv blocks (optionally batch-normed), then a dense head."""

    name: Literal["cnn"] = "cnn"
    features: tuple[Width, ...] = (32, 64)
    kernel_size: Small = 3
    dense: Width = 128
    dropout: Fraction = 0.0
    batch_norm: bool = False


@dataclass(config=_STRICT)
class ResNetConfig:
    """A small residual network for 8x8 to 32x32 images, batch-normed, with a dropout head."""

    name: Literal["resnet"] = "resnet"
    stage_sizes: tuple[Small, ...] = (2, 2)
    features: tuple[Width, ...] = (32, 64)
    dropout: Fraction = 0.0
    remat: bool = False  # recompute each block's activations in the backward pass

    @model_validator(mode="after")
    def _one_width_per_stage(self) -> ResNetConfig:
        if len(self.stage_sizes) != len(self.features):
            raise ValueError(
                f"features: one width per stage expected ({len(self.stage_sizes)} stages), "
                f"got {len(self.features)}"
            )
        return self


@dataclass(config=_STRICT)
class LinearConfig:
    """Linear regression (regression data) or multinomial logistic regression (classes).

    ``l2`` adds ``l2 * 0.5 * ||kernel||^2`` (never the bias) to the mean loss. ``solver``:
    ``closed_form`` (regression only; exact least squares / ridge, no optimizer) or
    ``gradient`` (the ordinary training loop with the optimizer section).
    """

    name: Literal["linear"] = "linear"
    solver: Literal["gradient", "closed_form"] = "gradient"
    l2: NonNegativeFloat = 0.0


def _check_heads_divide_width(section):
    """Attention splits ``d_model`` evenly over ``num_heads``."""
    if section.d_model % section.num_heads:
        raise ValueError(
            f"d_model: {section.d_model} is not divisible by num_heads={section.num_heads}"
        )
    return section


@dataclass(config=_STRICT)
class TransformerLMConfig:
    """A decoder-only, causal, pre-norm Transformer over bytes (vocabulary 256)."""

    name: Literal["transformer_lm"] = "transformer_lm"
    d_model: Width = 128
    num_heads: Small = 4
    num_layers: Small = 2
    mlp_ratio: Small = 4
    positions: Literal["learned", "rotary"] = "rotary"
    dropout: Fraction = 0.0
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    remat: bool = False  # recompute each block's activations in the backward pass

    _heads_divide_width = model_validator(mode="after")(_check_heads_divide_width)


@dataclass(config=_STRICT)
class ViTConfig:
    """A small Vision Transformer classifier: square patches, pre-norm encoder, CLS token."""

    name: Literal["vit"] = "vit"
    patch_size: Small = 2
    d_model: Width = 64
    num_heads: Small = 4
    num_layers: Small = 2
    mlp_ratio: Small = 2
    dropout: Fraction = 0.0
    remat: bool = False  # recompute each block's activations in the backward pass

    _heads_divide_width = model_validator(mode="after")(_check_heads_divide_width)


MaxFeatures = (
    Literal["sqrt", "log2"] | PositiveInt | Annotated[FiniteFloat, Field(gt=0, le=1)] | None
)


@dataclass(config=_STRICT)
class DecisionTreeConfig:
    """A CART decision tree fitted in JAX (no optimizer, no epochs): scikit-learn's settings."""

    name: Literal["decision_tree"] = "decision_tree"
    criterion: Literal["gini", "entropy", "squared_error"] = "gini"
    max_depth: Annotated[int, Field(ge=1, le=16)] = 8
    min_samples_split: MinSamplesSplit = 2
    min_samples_leaf: PositiveInt = 1
    max_features: MaxFeatures = None


@dataclass(config=_STRICT)
class RandomForestConfig(DecisionTreeConfig):
    """A random forest: ``n_estimators`` trees fitted at once (one vmap over bootstrap keys)."""

    name: Literal["random_forest"] = "random_forest"
    n_estimators: Trees = 100
    bootstrap: bool = True
    max_features: MaxFeatures = "sqrt"


def open_union(kind: str, builtins: dict[str, type]) -> Any:
    """A section tagged by its ``name``: a built-in validates against its own class (exactly
    as a plain discriminated union would), any other name against the section class of the
    family :mod:`jaxtrain.registry` resolves it to (the ``registered`` branch)."""

    def which(value: Any) -> str:
        name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
        return name if isinstance(name, str) and name in builtins else registry.OPEN_TAG

    def with_mapping(schema: dict[str, Any]) -> None:  # the JSON schema of a tagged union
        refs = [option["$ref"] for option in schema.get("oneOf", []) if "$ref" in option]
        schema["discriminator"] = {
            "propertyName": "name",
            "mapping": dict(zip(builtins, refs, strict=True)),
        }

    branches = [Annotated[cls, Tag(name)] for name, cls in builtins.items()]
    branches.append(
        Annotated[
            Any,
            PlainValidator(lambda value: registry.validate_section(kind, value)),
            Tag(registry.OPEN_TAG),
        ]
    )
    return Annotated[
        Union[tuple(branches)],  # noqa: UP007 - a union built from a list
        Discriminator(which),
        Field(json_schema_extra=with_mapping),
    ]


BUILTIN_MODELS = {
    "mlp": MLPConfig,
    "cnn": CNNConfig,
    "resnet": ResNetConfig,
    "linear": LinearConfig,
    "transformer_lm": TransformerLMConfig,
    "vit": ViTConfig,
    "decision_tree": DecisionTreeConfig,
    "random_forest": RandomForestConfig,
}
ModelConfig = open_union("model", BUILTIN_MODELS)


@dataclass(config=_STRICT)
class ScheduleConfig:
    """Learning-rate schedule: optional linear warmup from 0, then constant or cosine decay."""

    name: Literal["constant", "cosine"] = "constant"
    warmup_steps: NonNegativeInt = 0
    final_fraction: Annotated[FiniteFloat, Field(ge=0, le=1)] = 0.0


@dataclass(config=_STRICT)
class AdamConfig:
    """Adam; ``weight_decay`` is a coupled L2 term added to the gradient."""

    name: Literal["adam"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    b1: Fraction = 0.9
    b2: Fraction = 0.999
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    grad_clip_norm: PositiveFloat | None = None
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


@dataclass(config=_STRICT)
class AdamWConfig(AdamConfig):
    """AdamW: Adam with decoupled weight decay (the same keys as adam, decay on by default)."""

    name: Literal["adamw"] = "adamw"
    weight_decay: NonNegativeFloat = 1e-4


@dataclass(config=_STRICT)
class SGDConfig:
    """SGD with (optionally Nesterov) momentum; ``weight_decay`` is a coupled L2 term."""

    name: Literal["sgd"] = "sgd"
    learning_rate: PositiveFloat = 1e-2
    momentum: Fraction = 0.9
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 0.0
    grad_clip_norm: PositiveFloat | None = None
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


BUILTIN_OPTIMIZERS = {"adam": AdamConfig, "adamw": AdamWConfig, "sgd": SGDConfig}
OptimizerConfig = open_union("optimizer", BUILTIN_OPTIMIZERS)


@dataclass(config=_STRICT)
class CheckpointConfig:
    """Orbax checkpoints: the latest ``keep`` plus the best by validation ``monitor``.

    ``monitor`` must be a metric of the data's task: classification ``accuracy``, ``loss``,
    ``f1_macro``; regression ``loss``, ``mse``, ``rmse``, ``mae``, ``r2``; language
    modelling ``loss``, ``bits_per_byte``, ``accuracy``. Unset, it is ``accuracy`` for
    classification and ``loss`` otherwise.
    """

    keep: PositiveInt = 2
    monitor: (
        Literal["accuracy", "loss", "f1_macro", "mse", "rmse", "mae", "r2", "bits_per_byte"] | None
    ) = None
    async_save: bool = True


@dataclass(config=_STRICT)
class EarlyStoppingConfig:
    """Stop when the validation ``monitor`` (default: ``train.checkpoint.monitor``, which it
    then also ranks checkpoints by) has not improved by more than ``min_delta`` for
    ``patience`` evaluations in a row. The run then finishes normally: with ``restore_best``
    the test split is evaluated on the best checkpoint, else on the last state."""

    monitor: (
        Literal["accuracy", "loss", "f1_macro", "mse", "rmse", "mae", "r2", "bits_per_byte"] | None
    ) = None
    patience: PositiveInt = 5
    min_delta: NonNegativeFloat = 0.0
    restore_best: bool = True


@dataclass(config=_STRICT)
class ReduceOnPlateauConfig:
    """Multiply the learning rate (the schedule's peak, so warmup and decay keep their shape)
    by ``factor`` when the monitored validation metric has not improved by ``min_delta`` for
    ``patience`` evaluations; never below ``min_learning_rate``."""

    factor: Annotated[FiniteFloat, Field(gt=0, lt=1)] = 0.5
    patience: PositiveInt = 3
    min_delta: NonNegativeFloat = 0.0
    min_learning_rate: NonNegativeFloat = 0.0


@dataclass(config=_STRICT)
class AugmentConfig:
    """Random image augmentation: horizontal flips, random crops after zero-padding by
    ``crop_padding`` pixels, Gaussian noise of standard deviation ``noise_std`` (in
    normalised units, any input).

    ``where``: ``step`` (inside the jitted train step, its RNG folded from the step's key;
    streamed uint8 images are also converted to normalised floats there, so the host ships
    a quarter of the bytes) or ``workers`` (on the host, in the grain workers of
    ``data.workers``, seeded by ``data.seed`` and the batch's position, so resume is exact;
    the step then gets float32 batches and does not augment)."""

    flip_horizontal: bool = False
    crop_padding: Padding = 0
    noise_std: NonNegativeFloat = 0.0
    where: Literal["step", "workers"] = "step"


MeshAxis = capped(65_536, "a sanity cap: devices along one axis of a mesh")


@dataclass(config=_STRICT)
class MeshConfig:
    """A ``data x model`` device mesh: ``data`` devices split each batch (and, under FSDP,
    the parameters and optimizer state); ``model`` devices split the Transformer's attention
    heads, MLP and vocabulary (tensor parallel). ``data`` unset: every device not on
    ``model``. The product must equal the number of devices (checked when the run starts)."""

    data: MeshAxis | None = None
    model: MeshAxis = 1


@dataclass(config=_STRICT)
class ParallelConfig:
    """``train.parallel`` as a mesh: ``{mesh: {data: 4, model: 2}, fsdp: true}``. ``fsdp``
    splits parameters and optimizer state over the ``data`` axis (each device keeps a
    ``1/data`` share)."""

    mesh: MeshConfig = Field(default_factory=MeshConfig)
    fsdp: bool = False


@dataclass(config=_STRICT)
class TrainConfig:
    """The host loop: how long to train and how often to log, evaluate and checkpoint.

    ``eval_every`` (steps) defaults to once per epoch; every evaluation is also a checkpoint.
    ``label_smoothing`` (classification) mixes the one-hot targets with the uniform
    distribution in the training loss only; held-out losses stay plain cross-entropy.
    A step whose loss or gradient is not finite never updates the state; ``nonfinite`` says
    what follows: ``stop`` (an error naming the step and batch, at the next log point),
    ``skip`` (carry on; the count is in metrics.json) or ``rollback`` (return to the newest
    intact checkpoint, data position included, with the learning rate halved; at most 3
    times).

    How the step runs (the same pure step each time; see README "Parallel and fast training"):
    ``parallel`` is ``none`` (one device), ``sharded`` (one ``jit`` over a mesh of every device
    with the batch axis sharded and the parameters replicated; spans processes under
    ``distributed:``), ``fsdp`` (the same with parameters and optimizer state sharded too), a
    mesh ``{mesh: {data: D, model: M}, fsdp: true|false}`` (tensor parallel over ``model``; see
    :class:`ParallelConfig`) or ``pmap`` (data parallel over the local devices, gradients
    averaged, BatchNorm statistics synchronised). ``fused_epochs`` runs every stretch of steps
    between two evaluations (an epoch by default) as one ``lax.scan`` in one compiled call, the
    training split held in device memory; the batches are the per-step loop's, so the results
    are the same. ``precision: bfloat16`` computes the forward and backward passes in bfloat16
    with float32 parameters, optimizer state and loss. ``micro_batches`` splits each batch into
    that many micro-batches whose gradients are accumulated (by ``lax.scan``) into one update.

    ``extend_schedule`` says what the learning rate does when ``--resume RUN
    train.epochs=N`` extends a run past the length its schedule was laid out for:
    ``continue`` (stay at the value the schedule ended on) or ``restart`` (the schedule
    again over the added steps: warmup, then constant or a new cosine). Unset, a constant
    schedule continues and a decaying one asks. Each extension is a stage (``stages.json``;
    the earlier stage's results move to ``stages/<k>/``).
    """

    epochs: Epochs = 10
    eval_every: PositiveInt | None = None
    log_every: PositiveInt = 10
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig | None = None
    reduce_on_plateau: ReduceOnPlateauConfig | None = None
    label_smoothing: Fraction = 0.0
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    nonfinite: Literal["stop", "skip", "rollback"] = "stop"
    parallel: Literal["none", "pmap", "sharded", "fsdp"] | ParallelConfig = "none"
    fused_epochs: bool = False
    precision: Literal["float32", "bfloat16"] = "float32"
    micro_batches: PositiveInt = 1
    dp: DPSGDConfig | None = None
    extend_schedule: Literal["continue", "restart"] | None = None

    @model_validator(mode="after")
    def _one_monitor(self) -> TrainConfig:
        stopping = self.early_stopping
        chosen = self.checkpoint.monitor
        if stopping and stopping.monitor and chosen and stopping.monitor != chosen:
            raise ValueError(
                f"early_stopping.monitor ({stopping.monitor}) differs from checkpoint.monitor "
                f"({chosen}); the best checkpoint is the one early stopping restores, so set "
                "one of them"
            )
        return self

    @property
    def monitor(self) -> str | None:
        """The validation metric that ranks checkpoints (and drives early stopping)."""
        return self.checkpoint.monitor or (self.early_stopping and self.early_stopping.monitor)


@dataclass(config=_STRICT)
class FairnessConfig:
    """Audit (and optionally mitigate) a binary classifier's treatment of groups.

    ``sensitive_feature`` names an integer feature of the dataset holding each example's
    group (``group`` in ``biased_credit``). Every run then reports per-group metrics and the
    demographic parity and equalized odds gaps on the test split, before and after per-group
    thresholds fitted on validation for ``constraint``. ``mitigation: reweighing`` trains
    with Kamiran-Calders weights ``P(g) P(y) / P(g, y)`` (from the training split) on each
    example's loss.
    """

    sensitive_feature: Annotated[str, Field(min_length=1)]
    mitigation: Literal["none", "reweighing"] = "none"
    constraint: Literal["demographic_parity", "equal_opportunity"] = "demographic_parity"


@dataclass(config=_STRICT)
class Config:
    """One experiment: data, model, optimizer and training loop, plus a name and a seed.

    ``seed`` drives parameter initialisation and dropout; ``data.seed`` drives the split and
    the per-epoch shuffles, so the two can be varied independently.
    """

    name: RunName
    data: DataConfig
    model: ModelConfig = Field(default_factory=MLPConfig)
    optimizer: OptimizerConfig = Field(default_factory=AdamWConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: Seed = 0
    sweep: SweepConfig | None = None
    federated: FederatedConfig | None = None
    fairness: FairnessConfig | None = None
    distributed: DistributedConfig | None = None
    transfer: TransferConfig | None = None
    tracking: TrackingConfig | None = None

    @model_validator(mode="after")
    def _micro_batches_divide_batch(self) -> Config:
        if self.data.batch_size % self.train.micro_batches:
            raise ValueError(
                f"train.micro_batches: {self.train.micro_batches} does not divide "
                f"data.batch_size={self.data.batch_size} into equal micro-batches"
            )
        return self

    @model_validator(mode="after")
    def _dp_covers_the_model(self) -> Config:
        problem = dp_model_problem(self.federated, self.model) or dp_sgd_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _open_families_fit_the_run(self) -> Config:
        """A given optax transformation keeps its learning rate to itself: what would scale it
        is refused; an NNX model has no linen ``init`` for transfer learning."""
        if self.optimizer.name not in BUILTIN_OPTIMIZERS:
            family = registry.resolve("optimizer", self.optimizer.name)
            if family.spec.transformation is not None:
                for key, set_ in (
                    ("reduce_on_plateau", self.train.reduce_on_plateau is not None),
                    ("nonfinite", self.train.nonfinite == "rollback"),
                ):
                    if set_:
                        raise ValueError(
                            f"train.{key}: scales the learning rate, which a given optax "
                            "transformation keeps to itself; name the optimizer in the config "
                            "(a built-in, a registered one, or an optax factory such as "
                            "optimizer.name: optax:adamw) or remove the setting"
                        )
        if self.transfer is not None and self.model.name not in BUILTIN_MODELS:
            family = registry.resolve("model", self.model.name)
            if family.spec.nnx:
                raise ValueError(
                    f"transfer: model {self.model.name!r} is an NNX module; transfer learning "
                    "loads weights into Flax linen modules only"
                )
        return self
