"""Data layer: readers, the Interactions object, named datasets, splits and negative sampling."""

from ncf.data.datasets import DATASETS, Dataset, load_dataset, load_ncf_test
from ncf.data.interactions import DUPLICATE_RULE, Interactions
from ncf.data.io import read_interactions, read_item_titles, read_ncf_negative
from ncf.data.sampling import NegativeSampler, sample_negatives
from ncf.data.split import (
    Split,
    leave_k_out,
    leave_one_out,
    merge,
    random_split,
    time_split,
    train_validation_test,
)
from ncf.data.synthetic import make_synthetic
from ncf.data.vocabulary import Vocabulary

__all__ = [
    "DATASETS",
    "DUPLICATE_RULE",
    "Dataset",
    "Interactions",
    "NegativeSampler",
    "Split",
    "Vocabulary",
    "leave_k_out",
    "leave_one_out",
    "load_dataset",
    "load_ncf_test",
    "make_synthetic",
    "merge",
    "random_split",
    "read_interactions",
    "read_item_titles",
    "read_ncf_negative",
    "sample_negatives",
    "time_split",
    "train_validation_test",
]
