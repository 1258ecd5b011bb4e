"""Analytic prefill FLOPs of the language-model decoder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence

FLOPS_FORMULAS: Dict[str, Callable[[int, int, int], float]] = {
    # FastV's accounting (two FFN matrices); the default, to compare with papers.
    "fastv": lambda n, d, m: 4 * n * d * d + 2 * n * n * d + 2 * n * d * m,
    # SwiGLU FFNs (LLaMA, Qwen2) have three matrices.
    "swiglu": lambda n, d, m: 4 * n * d * d + 2 * n * n * d + 3 * n * d * m,
}


@dataclass(frozen=True)
class PrefillFlops:
    """Prefill FLOPs for one sequence, pruned and unpruned, under ``formula``."""
    pruned: float
    unpruned: float
    formula: str

    @property
    def ratio(self) -> float:
        return self.pruned / self.unpruned if self.unpruned else 1.0


def prefill_flops(tokens_per_layer: Sequence[int], full_len: int, hidden: int,
                  ffn: int, formula: str = "fastv") -> PrefillFlops:
    """Sum the per-layer formula over layers with the token count entering each layer."""
    if formula not in FLOPS_FORMULAS:
        raise ValueError(f"unknown FLOPs formula {formula!r}; choose from {sorted(FLOPS_FORMULAS)}")
    f = FLOPS_FORMULAS[formula]
    pruned = sum(f(n, hidden, ffn) for n in tokens_per_layer)
    unpruned = len(tokens_per_layer) * f(full_len, hidden, ffn)
    return PrefillFlops(float(pruned), float(unpruned), formula)
