"""``TrainConfig``: every training parameter, with standard names and validated values."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adam", "adamw", "adagrad", "adadelta", "sgd", "sparse_adam")
SCHEDULERS = (None, "plateau", "step", "cosine")
EARLY_STOPPING = (None, "HR@10", "NDCG@10", "loss")
L2_SCOPES = ("batch", "table")
EMBEDDING_UPDATES = ("auto", "dense", "lazy")
SHUFFLES = ("auto", "rows", "positives")
COLLAPSE_ACTIONS = ("stop", "flag")


@dataclass
class TrainConfig:
    """Training parameters.

    Attributes:
        epochs: maximum number of epochs.
        batch_size: rows (positives and negatives) per step.
        learning_rate: the optimiser's rate (Adadelta's too: Keras' default is 0.001).
        optimizer: "adam", "adamw", "adagrad", "adadelta", "sgd" (with ``momentum``) or
            "sparse_adam" (needs a model built with ``sparse=True``; dense parameters use Adam).
            With ``sparse=True`` models, "adam" also uses SparseAdam for the embeddings.
        optimizer_params: extra keyword arguments for the optimiser (e.g. Adadelta's rho, eps).
        momentum: SGD momentum.
        negatives: sampled negatives per positive (positive-only data).
        resample_negatives: draw fresh negatives every epoch (True) or once (the seed recipe).
        sampling_alpha: 0 = uniform negatives; > 0 = popularity ** alpha.
        recency_boost: weight a user's recent positives (and their sampled negatives) more:
            ``1 + recency_boost * 0.5 ** (age / recency_half_life)``, normalised to mean 1,
            where ``age`` counts the user's later interactions (`ncf.training.weights`).
            0 = every row weighs 1; needs timestamps (without them it is off).
        recency_half_life: interactions after which the boost halves.
        l2: L2 penalty on embeddings (its gradient is added; the logged loss excludes it).
        l2_scope: "batch": ``l2 * sum(rows ** 2) / batch_size`` over the embedding rows the
            batch uses (once per occurrence: a per-example penalty, independent of batch
            size); "table": ``l2 * sum(W ** 2)`` over whole tables every step (Keras'
            ``embeddings_regularizer``, as the seed recipe).
        embedding_updates: "dense" (the optimiser updates whole embedding tables every
            step), "lazy" (only the rows the batch used: Adam as ``SparseAdam``, Adagrad) or
            "auto" (per table: lazy for tables with more than 4 rows per batch row and
            at least 1M parameters when the optimiser has a lazy form, e.g. ML-20M's users;
            dense otherwise).
        shuffle: "rows" (every row of an epoch shuffled independently, as the paper and the
            seed) or "positives" (positives shuffled, each followed by its own sampled
            negatives: a batch holds 1/(negatives+1) as many distinct users, which makes
            lazy updates on large catalogues much cheaper), or "auto": "positives" when
            embeddings are updated lazily, else "rows".
        weight_decay: the optimiser's weight decay on all parameters (decoupled for AdamW).
        scheduler: None, "plateau" (on the early-stopping metric, else training loss), "step"
            (``step_size``, ``gamma``) or "cosine" (to 0 at ``epochs``); per epoch.
        warmup_epochs: linear warm-up from ``learning_rate / (warmup_epochs + 1)``.
        early_stopping: "HR@10", "NDCG@10" (sampled, on validation), "loss" (validation
            loss) or None. Best weights are restored at the end.
        patience, min_delta: epochs without an improvement larger than ``min_delta``.
        seed: seeds shuffling, negative sampling, dropout and evaluation candidates.
        n_eval_candidates: sampled negatives per validation positive (99 as the NCF paper).
        checkpoint_dir: write ``checkpoint-EPOCH.pt`` + ``state.json`` there atomically every epoch.
        resume: continue from the checkpoint in ``checkpoint_dir`` when there is one.
        verbose: rich progress bar on stderr.
        collapse_action: "stop" or "flag" when validation scores are (nearly) constant.
        refit: after early stopping on validation, train again (same initial weights) on
            train + validation for the chosen number of epochs, so the final model also
            learns from the validation interactions (`ncf.training.refit`). Doubles the
            training time; needs validation data (ignored without it).
        pretrain: NeuMF only: train a GMF and an MLP first and start from their weights.
        max_batches: cap on steps per epoch (None = all), for quick runs of slow recipes.
    """

    epochs: int = 20
    batch_size: int = 4096
    learning_rate: float = 0.004
    optimizer: str = "adam"
    optimizer_params: dict[str, Any] = field(default_factory=dict)
    momentum: float = 0.9
    negatives: int = 4
    resample_negatives: bool = True
    sampling_alpha: float = 0.0
    recency_boost: float = 0.0
    recency_half_life: float = 7.0
    l2: float = 0.0
    l2_scope: str = "batch"
    embedding_updates: str = "auto"
    shuffle: str = "auto"
    weight_decay: float = 0.0
    scheduler: str | None = None
    step_size: int = 10
    gamma: float = 0.5
    plateau_patience: int = 2
    warmup_epochs: int = 0
    early_stopping: str | None = "HR@10"
    patience: int = 5
    min_delta: float = 0.0
    seed: int = 0
    n_eval_candidates: int = 99
    checkpoint_dir: str | None = None
    resume: bool = False
    verbose: bool = True
    collapse_action: str = "stop"
    refit: bool = False
    pretrain: bool = False
    pretrain_alpha: float = 0.5
    max_batches: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown training parameter(s) {unknown}; valid: {sorted(cls.field_names())}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ValueError naming the field, the value and what was expected."""

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        def pos_int(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= (0 if allow_zero else 1)
            need(ok, name, "a non-negative integer" if allow_zero else "a positive integer")

        def num(name: str, low: float = 0.0, strict: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > low if strict else v >= low)
            need(ok, name, f"a finite number {'>' if strict else '>='} {low}")

        for name in ("epochs", "batch_size", "n_eval_candidates", "step_size", "plateau_patience"):
            pos_int(name)
        for name in ("negatives", "patience", "warmup_epochs", "seed"):
            pos_int(name, allow_zero=True)
        num("learning_rate", strict=True)
        for name in ("momentum", "sampling_alpha", "l2", "weight_decay", "min_delta"):
            num(name)
        num("recency_boost")
        num("recency_half_life", strict=True)
        num("gamma", strict=True)
        need(0.0 <= self.pretrain_alpha <= 1.0, "pretrain_alpha", "in [0, 1]")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}")
        need(self.scheduler in SCHEDULERS, "scheduler", f"one of {SCHEDULERS}")
        need(self.early_stopping in EARLY_STOPPING, "early_stopping", f"one of {EARLY_STOPPING}")
        need(self.l2_scope in L2_SCOPES, "l2_scope", f"one of {L2_SCOPES}")
        need(self.shuffle in SHUFFLES, "shuffle", f"one of {SHUFFLES}")
        need(
            self.embedding_updates in EMBEDDING_UPDATES,
            "embedding_updates",
            f"one of {EMBEDDING_UPDATES}",
        )
        need(
            self.collapse_action in COLLAPSE_ACTIONS,
            "collapse_action",
            f"one of {COLLAPSE_ACTIONS}",
        )
        need(isinstance(self.optimizer_params, dict), "optimizer_params", "a dict")
        need(
            self.max_batches is None
            or (isinstance(self.max_batches, int) and self.max_batches >= 1),
            "max_batches",
            "None or a positive integer",
        )
        need(
            not self.resume or self.checkpoint_dir is not None,
            "resume",
            "False unless checkpoint_dir is set",
        )
