"""Per-positive loss weights: recency weighting (``TrainConfig.recency_boost``).

Tastes drift, and a leave-latest-out evaluation asks for the next item: a user's recent
interactions say more about it than old ones (time-decayed implicit feedback, as in Ding & Li
2005, "Time weight collaborative filtering"). Each positive gets the weight
``1 + boost * 0.5 ** (age / half_life)``, where ``age`` counts the same user's interactions
that came after it (0 for the latest; ties keep input order, as the splits do), normalised to
mean 1 over all positives so the loss scale and learning rate stay comparable. Its sampled
negatives share the weight (one group, one weight). Without timestamps there is no recency:
every weight is 1.
"""

from __future__ import annotations

import numpy as np

from ncf.data import Interactions
from ncf.data.split import positions_within_user


def recency_ages(data: Interactions) -> np.ndarray:
    """For each row (canonical order: user, then time), how many of the user's rows are later."""
    position, count = positions_within_user(data)
    return count - 1 - position


def recency_weights(data: Interactions, boost: float, half_life: float) -> np.ndarray | None:
    """float32 weight per positive row of ``data``, or None (no boost, or no timestamps)."""
    if boost <= 0 or data.timestamps is None or len(data) == 0:
        return None
    if half_life <= 0:
        raise ValueError(f"recency_half_life must be > 0, got {half_life!r}")
    weights = 1.0 + boost * np.exp2(-recency_ages(data) / half_life)
    return (weights / weights.mean()).astype(np.float32)


__all__ = ["recency_ages", "recency_weights"]
