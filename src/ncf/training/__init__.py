"""Training: the loop, optimisers, learning-rate schedules, early stopping, checkpoints."""

from ncf.training.config import TrainConfig
from ncf.training.history import save_history
from ncf.training.pretrain import fit_neumf_pretrained
from ncf.training.scorer import ModelScorer
from ncf.training.trainer import FitResult, fit_model

__all__ = [
    "FitResult",
    "ModelScorer",
    "TrainConfig",
    "fit_model",
    "fit_neumf_pretrained",
    "save_history",
]
