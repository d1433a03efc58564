"""Named recipes: each is a model kind, its hyper-parameters and training parameters.

- ``mf``, ``gmf``, ``mlp``, ``neumf``: our defaults, chosen on ML-100K's validation split
  (``benchmarks/accuracy.py``; the test split is only reported). They differ from the paper
  where validation said so: more factors (64 for MF/GMF, 32 for NeuMF's GMF branch), large
  batches with a scaled learning rate (4096-16384 at 0.004-0.0113: fast on CPU), 8 negatives for
  MF/GMF, a per-example L2 on embeddings, early stopping on validation HR@10, then a refit
  on train + validation for the chosen number of epochs (``refit=True``), and recency
  weighting (``recency_boost=4``, ``recency_half_life=7``: a user's latest interaction
  weighs 5x before normalisation, one 7 interactions older 3x; chosen on validation over
  three splits for all four models), and grouped batches (``shuffle="positives"``: each
  positive with its own negatives; same validation accuracy as shuffling every row, and
  faster).
- ``ncf-gmf``, ``ncf-mlp``, ``ncf-neumf``: He et al. 2017's defaults: 8 predictive factors, MLP
  layers [64, 32, 16, 8] (32 + 32 concatenated -> 32 -> 16 -> 8), 4 negatives, Adam 1e-3,
  batch 256, embeddings N(0, 0.01).
- ``seed-mlp``: the Keras blog recipe this product started from, exactly (docs/seed.md): a
  64-32-16-1 tower, BatchNorm after the first layer, dropout 0.2, he_uniform hidden layers,
  glorot_normal output, uniform(+-0.05) embeddings (Keras' default) with L2 1e-6 on the whole
  tables and NonNeg, Adadelta (Keras: lr 0.001, rho 0.95, eps 1e-7), BCE, batch 16, one
  fixed set of 4 sampled negatives per positive reshuffled each epoch, early stopping on
  validation loss (min_delta 1e-4, patience 10, up to 200 epochs). The seed does not state the
  embedding size; 8 is used. It learns very slowly (see ``seed-mlp-tuned``).
- ``seed-mlp-tuned``: the same architecture with Adam, batch 256, negatives re-sampled each
  epoch and early stopping on validation HR@10.
"""

from __future__ import annotations

import copy
from typing import Any

from ncf.models import model_param_names

_SEED_MLP_MODEL = {
    "embedding_size": 8,
    "layers": [64, 32, 16],
    "dropout": 0.2,
    "batch_norm": "first",
    "bn_position": "after",
    "init": "uniform",
    "init_scale": 0.05,
    "hidden_init": "he_uniform",
    "output_init": "glorot_normal",
    "nonneg": True,
}
_PAPER_TRAIN = {
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 256,
    "negatives": 4,
    "epochs": 20,
    "early_stopping": "HR@10",
    "patience": 5,
}

# What our four defaults share: early stopping on validation HR@10, then a refit on train +
# validation; recency weighting; each positive batched with its own negatives.
RECENCY = {"recency_boost": 4.0, "recency_half_life": 7.0}  # also given to ALS for comparisons
_OUR_TRAIN = {
    "optimizer": "adam",
    "epochs": 40,
    "early_stopping": "HR@10",
    "patience": 5,
    "refit": True,
    **RECENCY,
    "shuffle": "positives",
}

PRESETS: dict[str, dict[str, Any]] = {
    "mf": {
        "model": "mf",
        "model_params": {"factors": 64, "init_std": 0.01},
        "train_params": {
            "learning_rate": 0.004,
            "batch_size": 4096,
            "negatives": 8,
            "l2": 1e-3,
            **_OUR_TRAIN,
        },
    },
    "gmf": {
        "model": "gmf",
        "model_params": {"factors": 64, "init_std": 0.01},
        "train_params": {
            "learning_rate": 0.004,
            "batch_size": 4096,
            "negatives": 8,
            "l2": 2e-6,
            **_OUR_TRAIN,
        },
    },
    "mlp": {
        "model": "mlp",
        "model_params": {"embedding_size": 32, "layers": [64, 32, 16], "init_std": 0.1},
        "train_params": {
            "learning_rate": 0.004,
            "batch_size": 4096,
            "negatives": 4,
            **_OUR_TRAIN,
        },
    },
    "neumf": {
        "model": "neumf",
        "model_params": {"factors": 32, "mlp_embedding_size": 32, "layers": [32, 16, 8]},
        "train_params": {
            "learning_rate": 0.0113,  # 0.008 * sqrt(2): batch 8192 -> 16384, same accuracy
            "batch_size": 16384,
            "negatives": 4,
            "l2": 1e-3,
            **_OUR_TRAIN,
        },
    },
    "ncf-gmf": {
        "model": "gmf",
        "model_params": {"factors": 8, "init_std": 0.01, "output_init": "lecun_uniform"},
        "train_params": dict(_PAPER_TRAIN),
    },
    "ncf-mlp": {
        "model": "mlp",
        "model_params": {
            "embedding_size": 32,
            "layers": [32, 16, 8],
            "init_std": 0.01,
            "hidden_init": "glorot_uniform",
            "output_init": "lecun_uniform",
        },
        "train_params": dict(_PAPER_TRAIN),
    },
    "ncf-neumf": {
        "model": "neumf",
        "model_params": {
            "factors": 8,
            "mlp_embedding_size": 32,
            "layers": [32, 16, 8],
            "init_std": 0.01,
            "mlp_init_std": 0.01,
            "hidden_init": "glorot_uniform",
            "output_init": "lecun_uniform",
        },
        "train_params": dict(_PAPER_TRAIN),
    },
    "seed-mlp": {
        "model": "mlp",
        "model_params": dict(_SEED_MLP_MODEL),
        "train_params": {
            "optimizer": "adadelta",
            "learning_rate": 1e-3,
            "optimizer_params": {"rho": 0.95, "eps": 1e-7},
            "batch_size": 16,
            "negatives": 4,
            "resample_negatives": False,
            "l2": 1e-6,
            "l2_scope": "table",
            "epochs": 200,
            "early_stopping": "loss",
            "min_delta": 1e-4,
            "patience": 10,
        },
    },
    "seed-mlp-tuned": {
        "model": "mlp",
        "model_params": dict(_SEED_MLP_MODEL),
        "train_params": {
            "optimizer": "adam",
            "learning_rate": 2e-3,
            "batch_size": 256,
            "negatives": 4,
            "l2": 1e-6,
            "l2_scope": "batch",
            "epochs": 40,
            "early_stopping": "HR@10",
            "patience": 5,
        },
    },
}
KINDS = ("mf", "gmf", "mlp", "neumf")


def resolve(name_or_kind: str, **overrides: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(kind, model_params, train_params) for a preset name with flat ``overrides`` applied.

    Each override goes to the model or to training by its name (``seed`` goes to both: it
    seeds the initialisation and training). Unknown names raise a ValueError listing the valid
    keys.
    """
    from ncf.training.config import TrainConfig  # presets bridge models and training

    if name_or_kind not in PRESETS:
        raise ValueError(
            f"unknown preset or model {name_or_kind!r}; expected one of {sorted(PRESETS)}"
        )
    preset = copy.deepcopy(PRESETS[name_or_kind])
    kind = preset["model"]
    model_keys = set(model_param_names(kind))
    train_keys = set(TrainConfig.field_names())
    model_params, train_params = preset["model_params"], preset["train_params"]
    unknown = sorted(k for k in overrides if k not in model_keys | train_keys)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for {name_or_kind!r}; model parameters: "
            f"{sorted(model_keys)}; training parameters: {sorted(train_keys)}"
        )
    for key, value in overrides.items():
        if key in model_keys:
            model_params[key] = value
        if key in train_keys:
            train_params[key] = value
    return kind, model_params, train_params
