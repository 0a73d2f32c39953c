"""The interval coder that pixels and latents share: a symbol in [lo, hi) is coded as the
binary decisions of a search of its interval, each under its exact conditional probability
P(symbol >= mid | lo <= symbol < hi) from the distribution's CDF. The product of the
decisions' probabilities is the symbol's probability, so the rate is the same as coding the
symbol in one step, and every probability comes from a CDF the caller computes (with exact
arithmetic where files must decode on any machine)."""

from __future__ import annotations

from collections.abc import Callable

import constriction
import numpy as np
import torch

_TINY_MASS = 1e-300  # below this the CDF cannot resolve an interval: its decisions are fair


def binary_model():
    """constriction's Bernoulli model with a probability per decision."""
    return constriction.stream.model.Bernoulli(perfect=False)


class IntervalSearch:
    """A binary search over integer symbols [lo, hi) (int64 tensors) under `cdf`, where
    `cdf(k)` is P(symbol < k); the CDF at the ends defaults to `cdf(lo)` and `cdf(hi)`."""

    def __init__(
        self,
        lo: torch.Tensor,
        hi: torch.Tensor,
        cdf: Callable[[torch.Tensor], torch.Tensor],
        c_lo: torch.Tensor | None = None,
        c_hi: torch.Tensor | None = None,
    ):
        self.lo, self.hi, self.cdf = lo, hi, cdf
        self.c_lo = cdf(lo) if c_lo is None else c_lo
        self.c_hi = cdf(hi) if c_hi is None else c_hi

    def active(self) -> torch.Tensor:
        """Where the interval still holds more than one symbol."""
        return self.hi - self.lo > 1

    def upper_probability(self) -> torch.Tensor:
        """P(symbol >= mid | lo <= symbol < hi) everywhere; 1/2 where the interval has no
        mass the CDF can resolve (far tails)."""
        self.mid = (self.lo + self.hi) >> 1
        self.c_mid = self.cdf(self.mid)
        mass = self.c_hi - self.c_lo
        p = (self.c_hi - self.c_mid) / mass.clamp_min(_TINY_MASS)
        return torch.where(mass > _TINY_MASS, p, 0.5).clamp(0.0, 1.0)

    def descend(self, upper: torch.Tensor, active: torch.Tensor) -> None:
        """Keep the upper half where `upper`, the lower elsewhere (only where `active`)."""
        up, down = active & upper, active & ~upper
        self.lo = torch.where(up, self.mid, self.lo)
        self.c_lo = torch.where(up, self.c_mid, self.c_lo)
        self.hi = torch.where(down, self.mid, self.hi)
        self.c_hi = torch.where(down, self.c_mid, self.c_hi)


def _flat(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.cpu().numpy())


def pop_symbols(coder, search: IntervalSearch) -> np.ndarray:
    """Decode one symbol per element of the search: int32, shaped like `search.lo`."""
    while bool((active := search.active()).any()):
        p = search.upper_probability()
        bits = coder.decode(binary_model(), _flat(p[active]))
        upper = torch.zeros_like(active)
        upper[active] = torch.from_numpy(bits.astype(bool))
        search.descend(upper, active)
    return search.lo.numpy().astype(np.int32)


def push_symbols(coder, symbols: torch.Tensor, search: IntervalSearch) -> None:
    """Encode int64 `symbols` (shaped like `search.lo`) so that `pop_symbols` on the same
    search decodes them: decisions are found top-down and pushed bottom-up (a stack)."""
    decisions = []
    while bool((active := search.active()).any()):
        p = search.upper_probability()
        upper = symbols >= search.mid
        decisions.append((_flat(upper[active].to(torch.int32)), _flat(p[active])))
        search.descend(upper, active)
    for bits, p in reversed(decisions):
        coder.encode_reverse(bits, binary_model(), p)
