"""Weight initialisers drawn from a local ``torch.Generator`` (never the global RNG).

Names follow Keras, whose recipes the presets reproduce:

- ``normal``: N(0, std) (the NCF paper's embeddings use std 0.01).
- ``uniform``: U(-scale, scale) (Keras' Embedding default is scale 0.05).
- ``he_uniform`` / ``he_normal``: limit sqrt(6 / fan_in) / truncated normal, std sqrt(2 / fan_in).
- ``glorot_uniform`` / ``glorot_normal``: limit sqrt(6 / (fan_in + fan_out)) / truncated normal,
  std sqrt(2 / (fan_in + fan_out)).
- ``lecun_uniform``: limit sqrt(3 / fan_in) (the NCF reference code's output layer).
- ``torch_default``: PyTorch's ``nn.Linear`` default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
- ``zeros``.

Truncated normals are cut at two standard deviations and rescaled as Keras does (std divided
by 0.8796, the std of a unit normal truncated at +-2), so the variance matches the target.
Fans: for a dense weight stored (out, in), fan_in = in and fan_out = out; for an embedding
table (rows, dim), Keras' convention is used: fan_in = rows, fan_out = dim.
"""

from __future__ import annotations

import math

import torch

INITIALISERS = (
    "normal",
    "uniform",
    "he_uniform",
    "he_normal",
    "glorot_uniform",
    "glorot_normal",
    "lecun_uniform",
    "torch_default",
    "zeros",
)
_TRUNC_STD = 0.87962566103423978


def check_initialiser(name: str, what: str = "init") -> str:
    """Return ``name`` if it is a known initialiser, else raise a ValueError listing them."""
    if name not in INITIALISERS:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(INITIALISERS)}")
    return name


def _fans(tensor: torch.Tensor, embedding: bool) -> tuple[int, int]:
    if tensor.ndim == 1:
        return tensor.shape[0], tensor.shape[0]
    rows, cols = tensor.shape[0], tensor.shape[1]
    return (rows, cols) if embedding else (cols, rows)


@torch.no_grad()
def initialise(
    tensor: torch.Tensor,
    name: str,
    generator: torch.Generator,
    *,
    std: float = 0.01,
    scale: float = 0.05,
    embedding: bool = False,
) -> torch.Tensor:
    """Fill ``tensor`` in place with initialiser ``name`` drawn from ``generator``."""
    check_initialiser(name)
    fan_in, fan_out = _fans(tensor, embedding)
    if name == "zeros":
        return tensor.zero_()
    if name == "normal":
        return tensor.normal_(0.0, std, generator=generator)
    if name in ("he_normal", "glorot_normal"):
        target = math.sqrt(2.0 / (fan_in if name == "he_normal" else fan_in + fan_out))
        sd = target / _TRUNC_STD
        return torch.nn.init.trunc_normal_(tensor, 0.0, sd, -2 * sd, 2 * sd, generator=generator)
    limit = {
        "uniform": scale,
        "he_uniform": math.sqrt(6.0 / fan_in),
        "glorot_uniform": math.sqrt(6.0 / (fan_in + fan_out)),
        "lecun_uniform": math.sqrt(3.0 / fan_in),
        "torch_default": 1.0 / math.sqrt(fan_in),
    }[name]
    return tensor.uniform_(-limit, limit, generator=generator)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (local: global RNG state is left untouched)."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen
