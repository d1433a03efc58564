"""Hyper-parameter search on the validation split: Optuna, TPE sampler, median pruner.

`search` sees only the training data and the validation split carved from it: the test split
is not one of its arguments. Each trial trains with early stopping on the validation metric
(``HR@10`` or ``NDCG@10``, sampled 1 + 99 as in the NCF paper) and reports it after every
epoch through the trainer's callback hook, so the median pruner stops unpromising trials
early. A trial's value is its best validation score; ``epochs`` is not searched but found by
early stopping (the best epoch is kept with the trial).

`tune` then refits the chosen configuration exactly as ``ncf train --config`` would and
evaluates it on the test split once. `write_report` writes ``best.toml`` (a config ``ncf
train --config`` accepts), ``trials.csv``, ``optimization_history.png`` and
``param_importances.png`` (Optuna's own matplotlib plots).

A study kept in SQLite (``optuna.storages.RDBStorage``) resumes: the same call continues
its trial count and runs only the trials still missing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncf.data.interactions import Interactions
from ncf.data.split import Split
from ncf.errors import TrainingDivergedError

METRICS = ("HR@10", "NDCG@10")
# Tower shapes searched for MLP and NeuMF (Optuna's categorical choices must be scalars).
LAYERS: dict[str, list[int]] = {
    "32-16-8": [32, 16, 8],
    "64-32-16": [64, 32, 16],
    "64-32-16-8": [64, 32, 16, 8],
    "128-64-32": [128, 64, 32],
}
_FINISHED = ("COMPLETE", "PRUNED")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is a main dependency
        raise ImportError(f"tuning needs optuna: pip install optuna ({exc})") from None
    return optuna


# ---------------------------------------------------------------------------- search spaces
# One entry per parameter: ("categorical", choices), ("float", low, high, log) or
# ("int", low, high). "layers" choices name entries of LAYERS.
Space = dict[str, tuple]
_TRAINING: Space = {
    "learning_rate": ("float", 5e-4, 2e-2, True),
    "l2": ("float", 1e-8, 1e-3, True),
    "negatives": ("int", 2, 12),
    # Batches below 2048 rows are several times slower per epoch on CPU for no gain here.
    "batch_size": ("categorical", [2048, 4096, 8192, 16384]),
}
SEARCH_SPACES: dict[str, Space] = {
    "mf": {
        "factors": ("categorical", [16, 32, 64, 128]),
        **_TRAINING,
        "l2": ("float", 1e-6, 1e-2, True),
    },
    "gmf": {"factors": ("categorical", [8, 16, 32, 64, 128]), **_TRAINING},
    "mlp": {
        "embedding_size": ("categorical", [16, 32, 64]),
        "layers": ("categorical", list(LAYERS)),
        "dropout": ("float", 0.0, 0.3, False),
        **_TRAINING,
    },
    "neumf": {
        "factors": ("categorical", [8, 16, 32, 64]),
        "mlp_embedding_size": ("categorical", [16, 32, 64]),
        "layers": ("categorical", list(LAYERS)),
        "dropout": ("float", 0.0, 0.3, False),
        **_TRAINING,
        "learning_rate": ("float", 1e-3, 3e-2, True),
    },
}


def _space(kind: str) -> Space:
    try:
        return SEARCH_SPACES[kind]
    except KeyError:
        raise ValueError(
            f"no search space for {kind!r}; expected one of {sorted(SEARCH_SPACES)}"
        ) from None


def suggest_params(trial: Any, kind: str) -> dict[str, Any]:
    """Parameters for one trial of a model kind, by their standard names."""
    out: dict[str, Any] = {}
    for name, (dist, *args) in _space(kind).items():
        if dist == "categorical":
            out[name] = trial.suggest_categorical(name, args[0])
        elif dist == "float":
            out[name] = trial.suggest_float(name, args[0], args[1], log=args[2])
        else:
            out[name] = trial.suggest_int(name, args[0], args[1])
    return params_from_trial(kind, out)


def params_from_trial(kind: str, trial_params: dict[str, Any]) -> dict[str, Any]:
    """Map a stored trial's parameters back to model/training values (layer names -> lists)."""
    out = dict(trial_params)
    if "layers" in out and isinstance(out["layers"], str):
        out["layers"] = list(LAYERS[out["layers"]])
    return out


def preset_trial(model: str, base_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's own values inside the search space (clipped; absent choices left out).

    Enqueued as a new study's first trial, so the search starts from the defaults and its
    best validation score is never below theirs.
    """
    from ncf.models.presets import resolve

    kind, model_params, train_params = resolve(model, **(base_params or {}))
    values = {**train_params, **model_params}
    values.setdefault("l2", 0.0)
    values.setdefault("dropout", 0.0)
    out: dict[str, Any] = {}
    for name, (dist, *args) in _space(kind).items():
        value = values.get(name)
        if name == "layers" and isinstance(value, list | tuple):
            value = next((k for k, v in LAYERS.items() if v == list(value)), None)
        if value is None:
            continue
        if dist == "categorical":
            if value in args[0]:
                out[name] = value
        else:
            out[name] = min(max(value, args[0]), args[1])
    return out


# ---------------------------------------------------------------------------- studies
def new_study(
    storage: str | Path | None,
    study_name: str,
    *,
    seed: int = 0,
    pruner: bool = True,
    n_startup_trials: int = 5,
) -> Any:
    """A maximising study with a seeded TPE sampler and (optionally) a median pruner.

    ``storage`` is a SQLite file path (created if missing; an existing study of that name is
    loaded and continues) or None for memory. On resume, the sampler's seed is offset by the
    number of trials already stored, so resumed trials do not repeat the first ones.
    Trials left RUNNING by a killed process are marked failed (Optuna's heartbeat).
    """
    optuna = _optuna()
    med = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=4)
        if pruner
        else optuna.pruners.NopPruner()
    )
    rdb = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        if storage is not None:
            path = Path(storage)
            path.parent.mkdir(parents=True, exist_ok=True)
            rdb = optuna.storages.RDBStorage(
                f"sqlite:///{path}", heartbeat_interval=30, grace_period=60
            )
        study = optuna.create_study(
            storage=rdb,
            study_name=study_name,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials),
            pruner=med,
            load_if_exists=True,
        )
        if rdb is not None:
            optuna.storages.fail_stale_trials(study)
    done = len(study.trials)
    if done:
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + done, n_startup_trials=n_startup_trials
        )
    return study


def finished_trials(study: Any) -> list[Any]:
    return [t for t in study.trials if t.state.name in _FINISHED]


def remaining_trials(study: Any, n_trials: int) -> int:
    """Trials still to run for the study to hold ``n_trials`` finished (complete or pruned)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials}")
    return max(0, n_trials - len(finished_trials(study)))


class PruningCallback:
    """Trainer callback: reports ``val_<metric>`` per epoch; stops the fit when pruned."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.key = f"val_{metric}"
        self.pruned = False

    def on_epoch_end(self, record: dict[str, Any], model: Any) -> bool:
        value = record.get(self.key)
        if value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), int(record["epoch"]))
        self.pruned = bool(self.trial.should_prune())
        return self.pruned


def fixed_params(metric: str, seed: int, max_epochs: int, patience: int) -> dict[str, Any]:
    """Training parameters every trial shares: epochs found by early stopping on ``metric``."""
    return {"epochs": max_epochs, "early_stopping": metric, "patience": patience, "seed": seed}


def search(
    model: str,
    train: Interactions,
    validation: Interactions,
    *,
    n_trials: int = 20,
    timeout: float | None = None,
    metric: str = "HR@10",
    seed: int = 0,
    max_epochs: int = 40,
    patience: int = 5,
    storage: str | Path | None = None,
    study_name: str | None = None,
    base_params: dict[str, Any] | None = None,
    callbacks: list[Callable] | None = None,
    start_from_preset: bool = True,
) -> Any:
    """Run (or resume) a study for ``model`` (a kind or preset) on train/validation only.

    Runs until the study holds ``n_trials`` finished trials or ``timeout`` seconds pass.
    ``base_params`` are fixed overrides applied under the searched ones. A new study's
    first trial is the preset itself (`preset_trial`) unless ``start_from_preset`` is False.
    Returns the study.
    """
    from ncf.models import build_model, model_param_names
    from ncf.models.presets import resolve
    from ncf.training import TrainConfig, fit_model

    optuna = _optuna()
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    kind, _, _ = resolve(model, **(base_params or {}))
    if kind not in SEARCH_SPACES:  # pragma: no cover - every kind has a space
        raise ValueError(f"no search space for model kind {kind!r}")
    fixed = fixed_params(metric, seed, max_epochs, patience)
    study = new_study(storage, study_name or f"{model}-{metric}", seed=seed)
    if start_from_preset and not study.trials:
        study.enqueue_trial(preset_trial(model, base_params))

    def objective(trial: Any) -> float:
        params = {**(base_params or {}), **suggest_params(trial, kind), **fixed}
        _, model_params, train_params = resolve(model, **params, verbose=False)
        # a trial is scored on validation: refitting on train + validation would only cost
        # time (the chosen configuration is refitted afterwards if it asks for it)
        config = TrainConfig.from_dict(train_params).replace(refit=False)
        seeded = {"seed": seed} if "seed" in model_param_names(kind) else {}
        net = build_model(kind, train.n_users, train.n_items, **{**seeded, **model_params})
        pruning = PruningCallback(trial, metric)
        try:
            result = fit_model(net, train, config, validation=validation, callbacks=[pruning])
        except TrainingDivergedError as exc:
            trial.set_user_attr("error", str(exc))
            raise optuna.TrialPruned(f"diverged: {exc}") from None
        best = next(r for r in result.history if r["epoch"] == result.best_epoch)
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("epochs_run", len(result.history))
        trial.set_user_attr("val_HR@10", float(best["val_HR@10"]))
        trial.set_user_attr("val_NDCG@10", float(best["val_NDCG@10"]))
        trial.set_user_attr("train_seconds", float(result.train_seconds))
        trial.set_user_attr("stopped_reason", result.stopped_reason)
        if pruning.pruned:
            raise optuna.TrialPruned()
        return float(best[f"val_{metric}"])

    left = remaining_trials(study, n_trials)
    if left:
        study.optimize(objective, n_trials=left, timeout=timeout, callbacks=callbacks)
    return study


def best_config(
    study: Any,
    model: str,
    *,
    metric: str,
    seed: int,
    max_epochs: int,
    patience: int,
    base_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every parameter of the best trial, resolved: what ``best.toml``'s [params] holds."""
    from ncf.models.presets import resolve

    if not any(t.state.name == "COMPLETE" for t in study.trials):
        raise ValueError("the study has no completed trial yet; run more trials")
    chosen = {
        **(base_params or {}),
        **params_from_trial(resolve(model)[0], study.best_params),
        **fixed_params(metric, seed, max_epochs, patience),
    }
    _, model_params, train_params = resolve(model, **chosen)
    params = {**model_params, **train_params}
    params.pop("verbose", None)
    return params


# ---------------------------------------------------------------------------- tune
@dataclass
class TuneResult:
    """A finished search: the study, the chosen configuration and its scores."""

    study: Any
    model: str
    metric: str
    params: dict[str, Any]
    validation: dict[str, float]
    test: dict[str, float] = field(default_factory=dict)
    recommender: Any = None

    def summary(self) -> dict[str, Any]:
        best = self.study.best_trial
        trials = self.study.trials
        return {
            "model": self.model,
            "metric": self.metric,
            "trials": len(trials),
            "trials_by_state": {
                s: sum(t.state.name == s for t in trials)
                for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
            },
            "best_trial": best.number,
            "best_value": best.value,
            "best_epoch": best.user_attrs.get("best_epoch"),
            "tuned_params": params_from_trial(self.model, best.params),
            "params": self.params,
            "validation": self.validation,
            "test": self.test,
        }


def tune(
    split: Split,
    model: str = "neumf",
    *,
    n_trials: int = 20,
    timeout: float | None = None,
    metric: str = "HR@10",
    seed: int = 0,
    max_epochs: int = 40,
    patience: int = 5,
    storage: str | Path | None = None,
    study_name: str | None = None,
    base_params: dict[str, Any] | None = None,
    evaluate_test: bool = True,
    scorer_factory: Callable[[Any], Any] | None = None,
    callbacks: list[Callable] | None = None,
) -> TuneResult:
    """Search on ``split.train`` / ``split.validation``, then evaluate the choice on test once.

    The chosen configuration is refitted exactly as ``ncf train --config best.toml`` fits
    it (same split seed, early stopping on validation). ``scorer_factory(recommender)``
    makes the scorer for the single test evaluation (default: ``recommender.scorer()``).
    """
    from ncf.evaluation.holdout import evaluate_split, flat_metrics
    from ncf.recommender import Recommender

    if split.validation is None:
        raise ValueError("tuning needs a validation split carved from training")
    study = search(
        model,
        split.train,
        split.validation,
        n_trials=n_trials,
        timeout=timeout,
        metric=metric,
        seed=seed,
        max_epochs=max_epochs,
        patience=patience,
        storage=storage,
        study_name=study_name,
        base_params=base_params,
        callbacks=callbacks,
    )
    settings = {"metric": metric, "seed": seed, "max_epochs": max_epochs, "patience": patience}
    params = best_config(study, model, base_params=base_params, **settings)
    rec = Recommender(model, **params).fit(split.train, validation=split.validation, verbose=False)
    summary = rec.fit_summary_.to_dict()["best_validation"]
    validation = {k.removeprefix("val_"): float(v) for k, v in summary.items() if k in _VAL}
    test: dict[str, float] = {}
    if evaluate_test:  # the only time the test split is read
        scorer = scorer_factory(rec) if scorer_factory is not None else rec.scorer()
        test = flat_metrics(evaluate_split(scorer, split, seed=seed))
    return TuneResult(study, model, metric, params, validation, test, rec)


_VAL = ("val_HR@10", "val_NDCG@10")


# ---------------------------------------------------------------------------- reports
def to_toml(model: str, params: dict[str, Any], header: list[str] | None = None) -> str:
    """A TOML document ``model = ...`` + ``[params]`` (what ``ncf train --config`` reads).

    None values are left out (TOML has no null); dicts become inline tables.
    """
    lines = [f"# {h}" for h in header or []]
    lines += [f"model = {_toml_value(model)}", "", "[params]"]
    for key in sorted(params):
        value = params[key]
        if value is None or (isinstance(value, dict) and not value):
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write a non-finite float {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to TOML")


def write_report(result: TuneResult, out: str | Path, dataset: str = "") -> dict[str, Path]:
    """``best.toml``, ``trials.csv``, ``optimization_history.png``, ``param_importances.png``.

    The importance plot needs two completed trials with differing parameters; with fewer
    the PNG says so instead of showing bars.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = result.study
    best = study.best_trial
    header = [
        f"ncf tune: {result.model}{' on ' + dataset if dataset else ''}, "
        f"{len(study.trials)} trials, best trial #{best.number}",
        f"validation {result.metric} = {best.value:.4f} (best epoch "
        f"{best.user_attrs.get('best_epoch')}; early stopping picks the epoch again)",
        f"use: ncf train DATASET --config best.toml --seed {result.params.get('seed', 0)}"
        " (the seed of the split the search used)",
    ]
    paths = {
        "config": out / "best.toml",
        "trials": out / "trials.csv",
        "history_plot": out / "optimization_history.png",
        "importance_plot": out / "param_importances.png",
    }
    paths["config"].write_text(to_toml(result.model, result.params, header), encoding="utf-8")
    study.trials_dataframe().to_csv(paths["trials"], index=False)
    _plots(study, paths["history_plot"], paths["importance_plot"])
    return paths


def _plots(study: Any, history_path: Path, importance_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only (ncf.report does the same)
    import matplotlib.pyplot as plt

    optuna = _optuna()
    vis = optuna.visualization.matplotlib
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        ax = vis.plot_optimization_history(study)
        ax.figure.set_size_inches(8, 5)
        ax.figure.tight_layout()
        ax.figure.savefig(history_path, dpi=100)
        plt.close(ax.figure)
        try:
            ax = vis.plot_param_importances(study)
            fig = ax.figure
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            fig, ax = plt.subplots()
            ax.text(0.5, 0.5, f"parameter importances unavailable:\n{exc}", ha="center")
            ax.set_axis_off()
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(importance_path, dpi=100)
        plt.close(fig)


__all__ = [
    "LAYERS",
    "METRICS",
    "SEARCH_SPACES",
    "PruningCallback",
    "TuneResult",
    "best_config",
    "new_study",
    "params_from_trial",
    "preset_trial",
    "remaining_trials",
    "search",
    "suggest_params",
    "to_toml",
    "tune",
    "write_report",
]
