"""Models: MF, GMF, MLP and NeuMF as ``nn.Module``s returning logits, plus presets."""

from __future__ import annotations

from typing import Any

from ncf.models.base import RecModel
from ncf.models.gmf import GMF
from ncf.models.mf import MF
from ncf.models.mlp import MLP
from ncf.models.neumf import NeuMF

MODELS: dict[str, type[RecModel]] = {"mf": MF, "gmf": GMF, "mlp": MLP, "neumf": NeuMF}


def model_class(kind: str) -> type[RecModel]:
    """The class for ``kind`` ("mf", "gmf", "mlp" or "neumf")."""
    try:
        return MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODELS)}") from None


def build_model(kind: str, n_users: int, n_items: int, **hp: Any) -> RecModel:
    """Build a model of ``kind``; unknown hyper-parameters raise a ValueError naming valid ones."""
    cls = model_class(kind)
    valid = model_param_names(kind)
    unknown = sorted(set(hp) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {unknown} for model {kind!r}; valid: {sorted(valid)}"
        )
    return cls(n_users, n_items, **hp)


def model_param_names(kind: str) -> list[str]:
    """Keyword hyper-parameters accepted by the model class of ``kind``."""
    import inspect

    sig = inspect.signature(model_class(kind).__init__)
    return [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]


__all__ = [
    "GMF",
    "MF",
    "MLP",
    "MODELS",
    "NeuMF",
    "RecModel",
    "build_model",
    "model_class",
    "model_param_names",
]
