"""Data: TFDS sources (bundled offline builders, prepared catalog datasets), splits,
normalisation and grain pipelines."""

from jaxtrain.data.builders import LOCAL_BUILDERS
from jaxtrain.data.dataset import PreparedData, prepare_data
from jaxtrain.data.pipeline import eval_batches, train_batches
from jaxtrain.data.prepare import Normalizer, fit_normalizer
from jaxtrain.data.sources import (
    ArraySplit,
    DatasetError,
    RawDataset,
    check_available,
    default_data_dir,
    load_tfds,
)
from jaxtrain.data.split import stratified_split

__all__ = [
    "LOCAL_BUILDERS",
    "ArraySplit",
    "DatasetError",
    "Normalizer",
    "PreparedData",
    "RawDataset",
    "check_available",
    "default_data_dir",
    "eval_batches",
    "fit_normalizer",
    "load_tfds",
    "prepare_data",
    "stratified_split",
    "train_batches",
]
