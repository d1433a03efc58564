"""Refit after model selection (``TrainConfig.refit``), as scikit-learn's ``refit``.

Early stopping needs a validation split carved from the training data, so the selected model
never saw each user's validation interaction, which in a leave-one-out split is the one
closest in time to the test item. With ``refit=True``, training runs twice:

1. selection: train on ``train``, early-stop on ``validation``; this fixes the number of
   epochs (and, for NeuMF with pre-training, the GMF's and MLP's epochs);
2. refit: a model with the same initial weights is trained on ``train + validation`` for
   exactly those epochs, with nothing watching validation (it is now training data).

The test split is not used by either phase. The returned `FitResult` is the refit's, with
the selection's history in front (records carry ``"phase"``), the selection's best epoch, and
the validation figures of the chosen epoch. Schedules that follow a metric ("plateau") follow
the training loss in the refit phase; the others replay the same epochs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncf.data import Interactions, merge
from ncf.models.base import RecModel
from ncf.training.config import TrainConfig

SELECTION, REFIT = "selection", "refit"


def _subdir(checkpoint_dir: str | None, name: str) -> str | None:
    return None if checkpoint_dir is None else str(Path(checkpoint_dir) / name)


def _matches(config: TrainConfig) -> bool:
    """Whether the refit checkpoint in ``config.checkpoint_dir`` (if any) trains as many
    epochs as ``config``: a run resumed with other settings may have selected another number
    of epochs, and the stale refit must then start over (it starts from the initial weights
    either way, so nothing else of the selection carries into it)."""
    from ncf.training.checkpoint import STATE

    state = Path(str(config.checkpoint_dir)) / STATE
    if not state.is_file():
        return True
    try:
        saved = json.loads(state.read_text()).get("config", {})
    except (OSError, ValueError):
        return True  # let the checkpoint loader report the damage
    return saved.get("epochs") == config.epochs


def fit_then_refit(
    fit: Callable[..., Any],
    model: RecModel,
    train: Interactions,
    config: TrainConfig,
    validation: Interactions,
    callbacks: list | None = None,
) -> Any:
    """Select the epochs on ``validation`` with ``fit``, then train ``model`` on train +
    validation for that many epochs. ``fit`` is `fit_model` or its distributed version.

    Checkpoints of the two phases go to ``checkpoint_dir/selection`` and
    ``checkpoint_dir/refit``; resuming replays a finished selection from its checkpoint.
    """
    base = config.replace(refit=False)
    selection_model = copy.deepcopy(model)  # same initial weights for both phases
    selected = fit(
        selection_model,
        train,
        base.replace(checkpoint_dir=_subdir(config.checkpoint_dir, SELECTION)),
        validation,
        callbacks,
    )
    del selection_model
    epochs = max(1, selected.best_epoch)
    final = base.replace(
        epochs=epochs,
        early_stopping=None,
        checkpoint_dir=_subdir(config.checkpoint_dir, REFIT),
    )
    if final.resume and not _matches(final):  # a refit left by a different selection
        final = final.replace(resume=False)
    merged = merge(train, validation)
    if config.pretrain and model.kind == "neumf":
        from ncf.training.pretrain import fit_neumf_pretrained

        gmf_hp, mlp_hp = model.component_params()
        stages = selected.component_epochs
        result = fit_neumf_pretrained(
            merged,
            final,
            None,
            gmf_hp,
            mlp_hp,
            alpha=config.pretrain_alpha,
            model=model,
            gmf_config=final.replace(epochs=max(1, stages.get("gmf", epochs))),
            mlp_config=final.replace(epochs=max(1, stages.get("mlp", epochs))),
            callbacks=callbacks,
        )
    else:
        result = fit(model, merged, final, None, callbacks)
    for record in selected.history:
        record["phase"] = SELECTION
    for record in result.history:
        record["phase"] = REFIT
    result.history = selected.history + result.history
    result.best_epoch = selected.best_epoch
    result.component_epochs = dict(selected.component_epochs)
    result.stopped_reason = (
        f"refit on training + validation data for {epochs} epochs "
        f"(selection: {selected.stopped_reason})"
    )
    result.train_seconds += selected.train_seconds
    result.flags = sorted(set(selected.flags) | set(result.flags))
    result.messages = selected.messages + result.messages
    return result


__all__ = ["REFIT", "SELECTION", "fit_then_refit"]
