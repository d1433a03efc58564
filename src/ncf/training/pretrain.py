"""NeuMF with pre-training (He et al. 2017, section 3.4.1): GMF and MLP first, then NeuMF."""

from __future__ import annotations

from typing import Any

from ncf.data import Interactions
from ncf.models import GMF, MLP, NeuMF
from ncf.training.config import TrainConfig


def fit_neumf_pretrained(
    train: Interactions,
    config: TrainConfig,
    validation: Interactions | None = None,
    gmf_params: dict[str, Any] | None = None,
    mlp_params: dict[str, Any] | None = None,
    alpha: float = 0.5,
    *,
    model: NeuMF | None = None,
    neumf_params: dict[str, Any] | None = None,
    gmf_config: TrainConfig | None = None,
    mlp_config: TrainConfig | None = None,
    callbacks: list | None = None,
):
    """Train a GMF and an MLP, initialise a NeuMF from them (output mixed by ``alpha``), train.

    The NeuMF is ``model`` when given, else built from ``neumf_params`` (or from the GMF's and
    MLP's sizes). Returns the NeuMF's FitResult; its ``messages`` include the components' best
    validation figures.
    """
    from ncf.training.trainer import fit_model

    config = config.replace(pretrain=False)
    n_users, n_items = train.shape
    if model is None:
        gp, mp = dict(gmf_params or {}), dict(mlp_params or {})
        hp = {
            "factors": gp.get("factors", 8),
            "mlp_embedding_size": mp.get("embedding_size", 32),
            "layers": mp.get("layers", [32, 16, 8]),
            **(neumf_params or {}),
        }
        model = NeuMF(n_users, n_items, **hp)
        gmf_params, mlp_params = model.component_params()
        gmf_params.update(gp)
        mlp_params.update(mp)
    elif gmf_params is None or mlp_params is None:
        gmf_params, mlp_params = model.component_params()
    gmf = GMF(n_users, n_items, **gmf_params)
    mlp = MLP(n_users, n_items, **mlp_params)
    quiet = {"checkpoint_dir": None, "resume": False}
    g = fit_model(gmf, train, (gmf_config or config).replace(**quiet), validation)
    m = fit_model(mlp, train, (mlp_config or config).replace(**quiet), validation)
    model.load_pretrained(g.model, m.model, alpha=alpha)
    result = fit_model(model, train, config, validation, callbacks)
    for name, r in (("GMF", g), ("MLP", m)):
        best = r.history[r.best_epoch - 1] if r.history else {}
        result.messages.append(
            f"pre-trained {name}: best epoch {r.best_epoch}, val HR@10 {best.get('val_HR@10')}"
        )
    result.train_seconds += g.train_seconds + m.train_seconds
    result.component_epochs = {"gmf": g.best_epoch, "mlp": m.best_epoch}
    return result
