"""External baselines: implicit's ALS and BPR (CPU), tuned on the validation split.

Both wrap a fitted implicit model as an evaluation scorer (``score_pairs``, ``score_users``,
``score_candidates`` in index space), so they run through the same protocols as our models.
implicit is optional: ``pip install 'ncf[baselines]'``. It is imported when a baseline is
fitted, never when this module is imported.

Tuning uses the validation protocol of the trainer exactly (`ValidationSet`: the same 99
sampled negatives per validation user for the same seed), so a tuned ALS and a tuned NeuMF
are chosen on the same numbers. The test split is never an argument here.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from ncf.data.interactions import Interactions
from ncf.errors import NotFittedError
from ncf.evaluation.protocols import evaluate_sampled
from ncf.evaluation.scoring import DotProductScorer

BASELINES = ("als", "bpr")
INSTALL_HINT = "the ALS and BPR baselines need implicit: pip install 'ncf[baselines]'"


def _implicit_cpu() -> tuple[Any, Any]:
    """implicit's CPU ALS and BPR classes, or an ImportError saying how to install them."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    return AlternatingLeastSquares, BayesianPersonalizedRanking


def implicit_available() -> bool:
    try:
        _implicit_cpu()
    except ImportError:
        return False
    return True


class ImplicitBaseline:
    """ALS or BPR from implicit (CPU) behind the evaluation scorer protocol.

    Args:
        algorithm: "als" (Hu, Koren & Volinsky 2008) or "bpr" (Rendle et al. 2009).
        factors: latent factors.
        regularization: L2 penalty.
        alpha: ALS only: confidence ``1 + alpha * r`` of an observed interaction.
        learning_rate: BPR only: SGD step size.
        iterations: ALS sweeps or BPR epochs.
        recency_boost, recency_half_life: ALS only: an interaction's ``r`` is its recency
            weight (`ncf.training.weights`, as our models' ``recency_boost``) instead of 1,
            so ALS can weigh recent interactions as our presets do. 0 = binary.
        seed: implicit's ``random_state``.
        num_threads: implicit's own threads (1 keeps BPR's Hogwild updates reproducible;
            0 = all cores). BLAS is limited to one thread while fitting, as implicit asks,
            within a context only (never globally).
    """

    def __init__(
        self,
        algorithm: str = "als",
        *,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        learning_rate: float = 0.01,
        iterations: int | None = None,
        recency_boost: float = 0.0,
        recency_half_life: float = 7.0,
        seed: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.algorithm = algorithm
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.iterations = iterations
        self.recency_boost = recency_boost
        self.recency_half_life = recency_half_life
        self.seed = seed
        self.num_threads = num_threads

    def _validate(self) -> None:
        if self.algorithm not in BASELINES:
            raise ValueError(f"algorithm must be one of {BASELINES}, got {self.algorithm!r}")
        if not isinstance(self.factors, int | np.integer) or self.factors < 1:
            raise ValueError(f"factors must be a positive integer, got {self.factors!r}")
        if self.recency_boost and self.algorithm != "als":
            raise ValueError("recency_boost applies to ALS only (BPR ignores weights)")
        if not self.recency_half_life > 0:
            raise ValueError(f"recency_half_life must be > 0, got {self.recency_half_life!r}")
        for name in ("regularization", "alpha", "learning_rate", "recency_boost"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        its = self.iterations
        if its is not None and (not isinstance(its, int | np.integer) or its < 1):
            raise ValueError(f"iterations must be a positive integer, got {its!r}")

    def params(self) -> dict[str, Any]:
        keys = ["factors", "regularization", "iterations", "seed"]
        keys += ["alpha"] if self.algorithm == "als" else ["learning_rate"]
        if self.recency_boost:
            keys += ["recency_boost", "recency_half_life"]
        return {k: getattr(self, k) for k in keys}

    def fit(self, train: Interactions) -> ImplicitBaseline:
        """Fit on the user x item matrix of ``train`` (binary, or recency weights); returns
        self."""
        from threadpoolctl import threadpool_limits

        from ncf.training.weights import recency_weights

        self._validate()
        als_cls, bpr_cls = _implicit_cpu()
        weights = recency_weights(train, self.recency_boost, self.recency_half_life)
        if weights is None:
            weights = np.ones(len(train), np.float32)
        user_items = sp.csr_matrix((weights, (train.users, train.items)), shape=train.shape)
        user_items.sum_duplicates()
        start = time.perf_counter()
        # implicit checks BLAS threads when an ALS model is built and wants one thread while
        # fitting: both happen inside this limit, which is undone on leaving it.
        with threadpool_limits(1, "blas"):
            model = self._build(als_cls, bpr_cls)
            model.fit(user_items, show_progress=False)
        self.train_seconds_ = time.perf_counter() - start
        # BPR's item factors carry a bias column and its user factors a matching column of
        # ones, so the dot product is the model's score for both algorithms.
        self.user_factors_ = np.asarray(model.user_factors, np.float32)
        self.item_factors_ = np.asarray(model.item_factors, np.float32)
        self.scorer_ = DotProductScorer(self.user_factors_, self.item_factors_)
        return self

    def _build(self, als_cls: Any, bpr_cls: Any) -> Any:
        if self.algorithm == "als":
            return als_cls(
                factors=int(self.factors),
                regularization=float(self.regularization),
                alpha=float(self.alpha),
                iterations=int(self.iterations or 15),
                random_state=int(self.seed),
                num_threads=int(self.num_threads),
            )
        return bpr_cls(
            factors=int(self.factors),
            learning_rate=float(self.learning_rate),
            regularization=float(self.regularization),
            iterations=int(self.iterations or 100),
            random_state=int(self.seed),
            num_threads=int(self.num_threads),
        )

    def _check(self) -> DotProductScorer:
        if not hasattr(self, "scorer_"):
            raise NotFittedError(f"this {self.algorithm} baseline is not fitted; call fit()")
        return self.scorer_

    @property
    def n_items(self) -> int:
        return self._check().n_items

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._check().score_pairs(users, items)

    def score_candidates(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._check().score_candidates(users, items)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self._check().score_users(users)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"ImplicitBaseline({self.algorithm!r}, {args})"


# ---------------------------------------------------------------------------- tuning
def suggest_baseline(trial: Any, algorithm: str) -> dict[str, Any]:
    """The search space of ALS or BPR, sampled from an Optuna trial."""
    factors = trial.suggest_categorical("factors", [16, 32, 64, 128, 256])
    if algorithm == "als":
        return {
            "factors": factors,
            "regularization": trial.suggest_float("regularization", 1e-3, 100.0, log=True),
            "alpha": trial.suggest_float("alpha", 0.1, 100.0, log=True),
            "iterations": trial.suggest_int("iterations", 3, 30),
        }
    if algorithm == "bpr":
        return {
            "factors": factors,
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.2, log=True),
            "regularization": trial.suggest_float("regularization", 1e-5, 0.1, log=True),
            "iterations": trial.suggest_int("iterations", 20, 400, log=True),
        }
    raise ValueError(f"algorithm must be one of {BASELINES}, got {algorithm!r}")


class ValidationScore:
    """Sampled HR@10 / NDCG@10 on validation with the trainer's candidates for ``seed``."""

    def __init__(self, train: Interactions, validation: Interactions, seed: int = 0) -> None:
        from ncf.training.config import TrainConfig
        from ncf.training.data import ValidationSet

        self.set = ValidationSet(train, validation, TrainConfig(seed=seed, verbose=False))

    def __call__(self, scorer: Any) -> dict[str, float]:
        s = self.set
        result = evaluate_sampled(scorer, s.users, s.items, s.candidates, k=10)
        return {"HR@10": float(result.means["HR@10"]), "NDCG@10": float(result.means["NDCG@10"])}


def tune_baseline(
    algorithm: str,
    train: Interactions,
    validation: Interactions,
    *,
    n_trials: int = 20,
    timeout: float | None = None,
    metric: str = "HR@10",
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    num_threads: int = 1,
    fixed: dict[str, Any] | None = None,
    refit: bool = True,
) -> tuple[ImplicitBaseline, Any]:
    """Tune ALS or BPR on ``validation`` with a seeded TPE study; return (fitted best, study).

    ``storage``: a SQLite path for the study (resumable), else in memory. ``fixed``: other
    `ImplicitBaseline` arguments every trial shares (e.g. ``recency_boost``). The returned
    model is fitted with the best parameters on train + validation (``refit``, as our presets
    refit; its ``validation_`` scores come from the fit on train alone) or on train.
    """
    from ncf.tuning import METRICS, new_study, remaining_trials

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    _implicit_cpu()  # fail before the study starts
    score = ValidationScore(train, validation, seed)
    study = new_study(storage, study_name or f"{algorithm}-{metric}", seed=seed, pruner=False)

    def objective(trial: Any) -> float:
        params = suggest_baseline(trial, algorithm)
        model = ImplicitBaseline(
            algorithm, seed=seed, num_threads=num_threads, **{**(fixed or {}), **params}
        )
        values = score(model.fit(train))
        trial.set_user_attr("val_HR@10", values["HR@10"])
        trial.set_user_attr("val_NDCG@10", values["NDCG@10"])
        trial.set_user_attr("train_seconds", model.train_seconds_)
        return values[metric]

    left = remaining_trials(study, n_trials)
    if left:
        study.optimize(objective, n_trials=left, timeout=timeout)
    chosen = {**(fixed or {}), **study.best_params}
    best = ImplicitBaseline(algorithm, seed=seed, num_threads=num_threads, **chosen)
    best.fit(train)
    scores = score(best)
    if refit:
        from ncf.data import merge

        best.fit(merge(train, validation))
    best.validation_ = scores
    return best, study


__all__ = [
    "BASELINES",
    "INSTALL_HINT",
    "ImplicitBaseline",
    "ValidationScore",
    "implicit_available",
    "suggest_baseline",
    "tune_baseline",
]
