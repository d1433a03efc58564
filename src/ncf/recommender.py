"""The `Recommender` facade: fit / recommend / similar_items / score / save / load, raw ids."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ncf import persistence
from ncf.data.interactions import Interactions
from ncf.data.split import leave_one_out
from ncf.data.vocabulary import Vocabulary
from ncf.errors import ModelFileError, NotFittedError, UnknownIdError
from ncf.models import build_model, model_class
from ncf.models.presets import resolve

_SCORE_BATCH = 1024  # users per scoring block
_RUN_ONLY_PARAMS = ("checkpoint_dir", "resume", "verbose")  # not part of a saved model


@dataclass
class Recommendations:
    """Top-k items per user, as raw ids.

    For one user, ``ids`` and ``scores`` are 1-D. For several users they are 2-D
    ``(n_users, k)``; a row with fewer than k candidates (a user who has seen almost every
    item) is padded with ``None`` ids and ``NaN`` scores, and ``counts`` gives the real length.
    ``fallback[i]`` is True when user i was unknown and got the popularity ranking.
    """

    user_ids: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    fallback: np.ndarray
    single: bool = False

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per user: ``{"user", "fallback", "items": [{"item", "score"}...]}``."""
        ids = self.ids[None] if self.single else self.ids
        scores = self.scores[None] if self.single else self.scores
        records = []
        for row, user in enumerate(np.atleast_1d(self.user_ids)):
            n = int(np.atleast_1d(self.counts)[row])
            records.append(
                {
                    "user": _py(user),
                    "fallback": bool(np.atleast_1d(self.fallback)[row]),
                    "items": [
                        {"item": _py(ids[row, j]), "score": float(scores[row, j])} for j in range(n)
                    ],
                }
            )
        return records


@dataclass
class FitSummary:
    """What `fit` did: epochs, timing, best validation metrics and any flags."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_reason: str | None = None
    train_seconds: float = 0.0
    samples_per_s: float = 0.0
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "stopped_reason": self.stopped_reason,
            "train_seconds": self.train_seconds,
            "samples_per_s": self.samples_per_s,
            "flags": list(self.flags),
            "best_validation": _best_row(self.history, self.best_epoch),
        }


class Recommender:
    """Neural collaborative filtering behind one object, speaking raw ids.

    Args:
        model: a model kind ("mf", "gmf", "mlp", "neumf") or a preset name ("ncf-neumf",
            "seed-mlp", ...). See ``ncf.models.presets.PRESETS``.
        **params: model hyper-parameters and training parameters by their standard names
            (``factors``, ``layers``, ``epochs``, ``learning_rate``, ``l2``, ``negatives``,
            ``batch_size``, ``seed``, ...). Unknown names raise a ValueError.

    Unknown users get a popularity ranking, flagged in the result. Unknown items raise
    `UnknownIdError` (in ``score``, ``similar_items``, ``items=`` and ``exclude=``).
    """

    def __init__(self, model: str = "neumf", **params: Any) -> None:
        self.model = model
        self.params = dict(params)
        resolve(model, **params)  # fail fast on a bad name or parameter

    # ------------------------------------------------------------------ training
    def fit(
        self,
        data: Interactions | pd.DataFrame,
        validation: Interactions | None | str = "auto",
        *,
        verbose: bool | None = None,
    ) -> Recommender:
        """Train from scratch on ``data`` (never resumes a previous fit; see `warm_start`).

        ``validation``: "auto" carves each user's latest interaction out of ``data`` for early
        stopping when the configuration uses it; an `Interactions` sharing ``data``'s
        vocabularies uses that split; None disables validation. Items in ``data`` and in the
        validation split both count as seen. With ``refit=True`` (our presets), the model is
        trained again on ``data`` plus the validation split for the epochs early stopping
        chose, so the final model has learned from both.
        """
        from ncf.training import TrainConfig, fit_model

        data = _as_interactions(data)
        kind, model_params, train_params = resolve(self.model, **self.params)
        if verbose is not None:
            train_params["verbose"] = verbose
        config = TrainConfig.from_dict(train_params)
        train, valid = data, None
        if isinstance(validation, Interactions):
            valid = validation
            _check_same_vocab(data, validation)
        elif validation == "auto" and config.early_stopping is not None:
            train, valid = leave_one_out(data, seed=config.seed)
        elif validation not in (None, "auto"):
            raise ValueError("validation must be 'auto', None or an Interactions object")
        seed_params = {"seed": config.seed} if "seed" in _model_keys(kind) else {}
        net = build_model(kind, data.n_users, data.n_items, **{**seed_params, **model_params})
        result = _fitter(fit_model)(net, train, config, validation=valid)
        self._set_fitted(result.model, data, valid, kind, config)
        self.fit_summary_ = FitSummary(
            history=list(result.history),
            best_epoch=result.best_epoch,
            stopped_reason=result.stopped_reason,
            train_seconds=float(result.train_seconds),
            samples_per_s=float(result.samples_per_s),
            flags=list(result.flags),
        )
        return self

    def warm_start(self, data: Interactions | pd.DataFrame, **train_overrides: Any) -> Recommender:
        """Continue training the fitted model on ``data`` (same vocabularies), explicitly."""
        from ncf.training import TrainConfig, fit_model

        self._check_fitted()
        data = _as_interactions(data)
        if data.user_vocab != self.user_vocab_ or data.item_vocab != self.item_vocab_:
            raise ValueError("warm_start needs data with the fitted model's vocabularies")
        config = TrainConfig.from_dict({**self.train_config_, **train_overrides})
        config = config.replace(early_stopping=None, resume=False, checkpoint_dir=None)
        result = fit_model(self.model_, data, config, validation=None)
        self.model_ = result.model.eval()
        self._seen = (self._seen + data.csr).tocsr()
        self._seen.data[:] = 1
        return self

    def _set_fitted(
        self,
        net: torch.nn.Module,
        data: Interactions,
        valid: Interactions | None,
        kind: str,
        config: Any,
    ) -> None:
        self.model_ = net.eval()
        self.kind_ = kind
        self.user_vocab_ = data.user_vocab
        self.item_vocab_ = data.item_vocab
        seen = data.csr if valid is None else data.csr + valid.csr
        self._seen = sp.csr_matrix(seen, dtype=np.float32)
        self._seen.data[:] = 1
        self.item_popularity_ = np.asarray(self._seen.sum(axis=0)).ravel().astype(np.int64)
        self.train_config_ = {
            k: v for k, v in config.to_dict().items() if k not in ("checkpoint_dir", "resume")
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this Recommender is not fitted yet; call fit() or load()")

    # ------------------------------------------------------------------ scoring
    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.item_vocab_)

    def seen_items(self, user_id: Any) -> np.ndarray:
        """Raw ids of the items a known user has interacted with."""
        self._check_fitted()
        row = self.user_vocab_.index([user_id])[0]
        return self.item_vocab_.raw(
            self._seen.indices[self._seen.indptr[row] : self._seen.indptr[row + 1]]
        )

    @torch.no_grad()
    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        """Logits for known user indices against every item: (len, n_items) float32."""
        out = np.empty((len(user_idx), self.n_items), np.float32)
        for s in range(0, len(user_idx), _SCORE_BATCH):
            users = torch.as_tensor(user_idx[s : s + _SCORE_BATCH], dtype=torch.int64)
            out[s : s + _SCORE_BATCH] = self.model_.score_users(users).float().numpy()
        return out

    def score(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Probabilities (sigmoid of the logits) for (user, item) pairs given as raw ids.

        Unknown users or items raise `UnknownIdError`.
        """
        self._check_fitted()
        users = self.user_vocab_.index(user_ids)
        items = self.item_vocab_.index(item_ids)
        if len(users) != len(items):
            raise ValueError(f"{len(users)} users but {len(items)} items; pass one per pair")
        with torch.no_grad():
            logits = self.model_(torch.as_tensor(users), torch.as_tensor(items))
        return torch.sigmoid(logits).numpy()

    def recommend(
        self,
        user_ids: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Any = None,
        exclude: Any = None,
    ) -> Recommendations:
        """Top-``k`` items for each user, raw ids in and out, best first.

        Args:
            user_ids: one raw user id (1-D result) or a list of them (2-D result).
            k: how many items per user.
            exclude_seen: drop items the user interacted with in training (default).
            items: only rank these raw item ids (an allow-list).
            exclude: never return these raw item ids (a deny-list).
        Scores are probabilities. Unknown users get the most popular items, flagged.
        """
        self._check_fitted()
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        single = np.ndim(user_ids) == 0
        raw_users = np.atleast_1d(np.asarray(user_ids, dtype=object))
        idx = self.user_vocab_.index(raw_users, missing="mask")
        known = idx >= 0
        allowed = np.ones(self.n_items, bool)
        if items is not None:
            allowed[:] = False
            allowed[self.item_vocab_.index(items)] = True
        if exclude is not None:
            allowed[self.item_vocab_.index(exclude)] = False
        k = min(int(k), self.n_items)
        top_idx = np.full((len(raw_users), k), -1, np.int64)
        top_scores = np.full((len(raw_users), k), np.nan, np.float32)
        rows = np.flatnonzero(known)
        popularity = self.item_popularity_.astype(np.float32)
        for s in range(0, len(rows), _SCORE_BATCH):
            block_rows = rows[s : s + _SCORE_BATCH]
            scores = torch.sigmoid(torch.from_numpy(self._score_block(idx[block_rows])))
            self._fill_top(
                scores, idx[block_rows], block_rows, allowed, exclude_seen, k, top_idx, top_scores
            )
        unknown_rows = np.flatnonzero(~known)
        if len(unknown_rows):
            pop_scores = torch.from_numpy(popularity / max(1.0, popularity.max()))
            scores = pop_scores.expand(len(unknown_rows), -1).clone()
            self._fill_top(scores, None, unknown_rows, allowed, False, k, top_idx, top_scores)
        counts = (top_idx >= 0).sum(axis=1)
        ids = np.empty(top_idx.shape, dtype=object)
        ids[top_idx >= 0] = self.item_vocab_.raw(top_idx[top_idx >= 0])
        ids[top_idx < 0] = None
        if self.item_vocab_.is_integer and (counts == k).all():
            ids = ids.astype(np.int64)
        if single:
            n = int(counts[0])
            return Recommendations(
                raw_users[0],
                ids[0, :n],
                top_scores[0, :n],
                counts[0],
                np.bool_(~known[0]),
                single=True,
            )
        return Recommendations(raw_users, ids, top_scores, counts, ~known)

    def _fill_top(
        self,
        scores: torch.Tensor,
        user_idx: np.ndarray | None,
        out_rows: np.ndarray,
        allowed: np.ndarray,
        exclude_seen: bool,
        k: int,
        top_idx: np.ndarray,
        top_scores: np.ndarray,
    ) -> None:
        """Mask disallowed and seen items with -inf, then write the top-k into the outputs."""
        scores[:, torch.from_numpy(~allowed)] = -torch.inf
        if exclude_seen and user_idx is not None:
            sub = self._seen[user_idx]
            row_of = np.repeat(np.arange(len(user_idx)), np.diff(sub.indptr))
            scores[
                torch.from_numpy(row_of), torch.from_numpy(sub.indices.astype(np.int64))
            ] = -torch.inf
        values, index = torch.topk(scores, k, dim=1)
        valid = torch.isfinite(values).numpy()
        index = index.numpy()
        top_idx[out_rows] = np.where(valid, index, -1)
        top_scores[out_rows] = np.where(valid, values.numpy(), np.nan)

    def similar_items(self, item_ids: Any, k: int = 10) -> Recommendations:
        """The ``k`` items most similar to each given item, by cosine similarity.

        The representation is the model's item embedding (``item_representation()``: see each
        model's docstring; for NeuMF the GMF and MLP item embeddings concatenated). The item
        itself is never returned. Unknown items raise `UnknownIdError`.
        """
        self._check_fitted()
        single = np.ndim(item_ids) == 0
        raw = np.atleast_1d(np.asarray(item_ids, dtype=object))
        idx = self.item_vocab_.index(raw)
        with torch.no_grad():
            rep = torch.nn.functional.normalize(self.model_.item_representation().float(), dim=1)
            sims = rep[torch.as_tensor(idx)] @ rep.T
        sims[torch.arange(len(idx)), torch.as_tensor(idx)] = -torch.inf
        k = min(int(k), self.n_items - 1)
        values, index = torch.topk(sims, k, dim=1)
        ids = self.item_vocab_.raw(index.numpy())
        counts = np.full(len(idx), k)
        flags = np.zeros(len(idx), bool)
        if single:
            return Recommendations(
                raw[0], ids[0], values[0].numpy(), counts[0], np.bool_(False), single=True
            )
        return Recommendations(raw, ids, values.numpy(), counts, flags)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` atomically into directory ``path``."""
        self._check_fitted()
        tensors = {f"model.{k}": v for k, v in self.model_.state_dict().items()}
        tensors["seen.indptr"] = torch.from_numpy(self._seen.indptr.astype(np.int64))
        tensors["seen.indices"] = torch.from_numpy(self._seen.indices.astype(np.int64))
        tensors["item_popularity"] = torch.from_numpy(self.item_popularity_)
        config = {
            "model": {
                "kind": self.kind_,
                "name": self.model,
                "params": {k: v for k, v in self.params.items() if k not in _RUN_ONLY_PARAMS},
                "hyperparameters": self.model_.hyperparameters(),
                "n_users": len(self.user_vocab_),
                "n_items": len(self.item_vocab_),
            },
            "data": {
                "user_ids": self.user_vocab_.to_list(),
                "item_ids": self.item_vocab_.to_list(),
                "item_titles": dict(extra.get("item_titles", {})) if extra else {},
            },
            "training": {
                "config": self.train_config_,
                "summary": getattr(self, "fit_summary_", FitSummary()).to_dict(),
                **(extra.get("training", {}) if extra else {}),
            },
            "metrics": dict(extra.get("metrics", {})) if extra else {},
        }
        return persistence.save_directory(path, tensors, _jsonable(config))

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model directory written by `save`; needs no training data, unpickles nothing."""
        tensors, config = persistence.load_directory(path)
        try:
            meta, data = config["model"], config["data"]
            kind = meta["kind"]
            model_class(kind)
            n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
            net = build_model(kind, n_users, n_items, **meta["hyperparameters"])
            state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
            net.load_state_dict(state, strict=True)
            user_vocab = Vocabulary(data["user_ids"], "user")
            item_vocab = Vocabulary(data["item_ids"], "item")
            indptr = tensors["seen.indptr"].numpy()
            indices = tensors["seen.indices"].numpy()
            seen = sp.csr_matrix(
                (np.ones(len(indices), np.float32), indices, indptr), shape=(n_users, n_items)
            )
            popularity = tensors["item_popularity"].numpy()
            if len(user_vocab) != n_users or len(item_vocab) != n_items:
                raise ValueError("vocabulary sizes do not match n_users/n_items")
            if len(popularity) != n_items:
                raise ValueError("item_popularity has the wrong length")
            rec = cls(meta.get("name", kind), **meta.get("params", {}))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: inconsistent model directory ({exc})") from None
        rec.model_ = net.eval()
        rec.kind_ = kind
        rec.user_vocab_, rec.item_vocab_ = user_vocab, item_vocab
        rec._seen = seen
        rec.item_popularity_ = popularity.astype(np.int64)
        rec.train_config_ = config.get("training", {}).get("config", {})
        rec.item_titles_ = {str(k): v for k, v in data.get("item_titles", {}).items()}
        rec.config_ = config
        return rec

    def title(self, item_id: Any) -> str | None:
        """Item title when the model was saved with titles, else None."""
        return getattr(self, "item_titles_", {}).get(str(item_id))

    def scorer(self) -> Any:
        """An evaluation scorer (index space) for `ncf.evaluation` protocols."""
        from ncf.training import ModelScorer

        self._check_fitted()
        return ModelScorer(self.model_)


# ---------------------------------------------------------------------- helpers
def _fitter(fit_model: Any) -> Any:
    """`fit_model`, or its DDP version when torchrun started several processes."""
    from ncf.training.distributed import fit_model_distributed, is_distributed

    return fit_model_distributed if is_distributed() else fit_model


def _as_interactions(data: Interactions | pd.DataFrame) -> Interactions:
    if isinstance(data, Interactions):
        return data
    if isinstance(data, pd.DataFrame):
        return Interactions.from_frame(data)
    raise TypeError(f"expected Interactions or a pandas DataFrame, got {type(data).__name__}")


def _check_same_vocab(a: Interactions, b: Interactions) -> None:
    if a.user_vocab != b.user_vocab or a.item_vocab != b.item_vocab:
        raise ValueError("validation must share the training data's vocabularies (use a split)")


def _model_keys(kind: str) -> list[str]:
    from ncf.models import model_param_names

    return model_param_names(kind)


def _best_row(history: list[dict[str, Any]], best_epoch: int | None) -> dict[str, Any]:
    for row in history:
        if row.get("epoch") == best_epoch:
            return {k: v for k, v in row.items() if k.startswith(("val_", "HR", "NDCG"))}
    return {}


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _jsonable(obj: Any) -> Any:
    """Deep-convert numpy scalars/arrays and tuples into JSON-ready Python values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return copy.copy(obj)


__all__ = ["Recommendations", "Recommender", "FitSummary", "UnknownIdError"]
