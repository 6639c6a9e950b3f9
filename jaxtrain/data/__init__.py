"""Data: TFDS sources (bundled offline builders, prepared catalog datasets) and CSV/Parquet
tables, cleaning (duplicates, errors, missing values, label errors), splits and leakage
checks, normalisation, the data report, and grain pipelines."""

from jaxtrain.data.builders import LOCAL_BUILDERS
from jaxtrain.data.data_report import DataReport, render_markdown, write_data_report
from jaxtrain.data.dataset import PreparedData, prepare_data
from jaxtrain.data.dedup import dedup_passages, passage_leakage
from jaxtrain.data.label_errors import LabelSuspects, confident_learning, find_label_errors
from jaxtrain.data.labels import balanced_class_weights
from jaxtrain.data.pipeline import eval_batches, prefetched, train_batches, train_index_batches
from jaxtrain.data.prepare import Normalizer, fit_normalizer
from jaxtrain.data.sources import (
    ArraySplit,
    DatasetError,
    RawDataset,
    check_available,
    default_data_dir,
    load_tfds,
)
from jaxtrain.data.split import (
    fold_ids,
    grouped_split,
    kfold_indices,
    random_split,
    stratified_split,
)
from jaxtrain.data.streaming import StreamSplit
from jaxtrain.data.tabular import Table, load_table

__all__ = [
    "LOCAL_BUILDERS",
    "ArraySplit",
    "DataReport",
    "DatasetError",
    "LabelSuspects",
    "Normalizer",
    "PreparedData",
    "RawDataset",
    "StreamSplit",
    "Table",
    "balanced_class_weights",
    "check_available",
    "confident_learning",
    "dedup_passages",
    "default_data_dir",
    "eval_batches",
    "find_label_errors",
    "fit_normalizer",
    "fold_ids",
    "grouped_split",
    "kfold_indices",
    "load_table",
    "load_tfds",
    "passage_leakage",
    "prefetched",
    "prepare_data",
    "random_split",
    "render_markdown",
    "stratified_split",
    "train_batches",
    "train_index_batches",
    "write_data_report",
]
