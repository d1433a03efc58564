"""ncf: neural collaborative filtering for implicit feedback.

The public API: `Recommender` (fit / recommend / similar_items / score / save / load), the
data layer in `ncf.data`, evaluation in `ncf.evaluation`, models in `ncf.models`.
"""

__version__ = "0.1.0"

from ncf.errors import (  # noqa: E402
    DataError,
    DatasetNotFoundError,
    ModelFileError,
    NCFError,
    NotFittedError,
    SplitError,
    TrainingDivergedError,
    UnknownIdError,
)


def __getattr__(name: str):  # lazy: `import ncf` stays light for the CLI's --help
    if name in ("Recommender", "Recommendations"):
        from ncf import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module 'ncf' has no attribute {name!r}")


__all__ = [
    "DataError",
    "DatasetNotFoundError",
    "ModelFileError",
    "NCFError",
    "NotFittedError",
    "Recommendations",
    "Recommender",
    "SplitError",
    "TrainingDivergedError",
    "UnknownIdError",
    "__version__",
]
