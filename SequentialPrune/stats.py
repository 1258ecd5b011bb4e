"""What a pruner observed in its last prefill."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .flops import PrefillFlops, prefill_flops


@dataclass
class PruneStats:
    """Statistics of the last prefill seen by a :class:`~SequentialPrune.engine.Pruner`.

    ``image_tokens_per_layer[i]`` counts the image tokens entering decoder layer
    ``i``; ``kept_image_indices[i]`` gives, for each pruning layer ``i``, which
    image tokens (0..N-1 in prompt order) entered it; ``scores[i]`` holds the
    scores a scorer ranked by, keyed by the layer they were computed at (the
    previous layer's last-token attention for FastV-style scorers, the pruning
    layer's own for PyramidDrop), over the tokens present there. Tensors stay on the device where they were made (no
    host sync during the forward); call ``.cpu()`` to inspect them.

    A batch whose rows differ (image-token counts, and so schedules) is described row by row by :meth:`row`,
    which gives each row's own record, equal to what a batch-1 run of that row records. The batch-level fields
    then hold the per-layer maximum over rows (the tokens the padded batch carried), and a row of
    ``kept_image_indices[i]`` that keeps fewer than the most is padded with -1.
    """
    num_layers: int
    hidden_size: int
    ffn_size: int
    positions: Optional[str] = None   # "original" or "renumber" (None: nothing is pruned); a combination whose
                                      # stages number differently: "renumber+original" (before stage first)
    image_tokens_per_layer: List[int] = field(default_factory=list)
    n_image_tokens: int = 0
    seq_len: int = 0
    batch_size: int = 0
    kept_image_indices: Dict[int, torch.Tensor] = field(default_factory=dict)
    scores: Dict[int, torch.Tensor] = field(default_factory=dict)
    prefills: int = 0
    row_image_tokens: List[List[int]] = field(default_factory=list)   # [row][layer]
    row_n_image: List[int] = field(default_factory=list)
    row_seq_len: List[int] = field(default_factory=list)              # each row's tokens, padding left out
    merged: Dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, kept) bool, aligned with
                                                                   # kept_image_indices: the slots a merge rewrote

    def reset(self, n_image: Sequence[int], row_len: Sequence[int], seq_len: int) -> None:
        """Start a prefill of ``len(n_image)`` rows with these image tokens and unpadded lengths."""
        self.row_n_image, self.row_seq_len = list(n_image), list(row_len)
        self.batch_size, self.seq_len = len(self.row_n_image), seq_len
        self.n_image_tokens = max(self.row_n_image, default=0)
        self.row_image_tokens = [[n] * self.num_layers for n in self.row_n_image]
        self.image_tokens_per_layer = [self.n_image_tokens] * self.num_layers
        self.kept_image_indices, self.scores, self.merged = {}, {}, {}

    def set_layer(self, i: int, counts: Sequence[int]) -> None:
        """The image tokens each row carries into layer ``i``."""
        for r, n in enumerate(counts):
            self.row_image_tokens[r][i] = n
        self.image_tokens_per_layer[i] = max(counts, default=0)

    @property
    def uniform(self) -> bool:
        """Whether every row has the same image tokens and length (batch 1 always is)."""
        return len(set(self.row_n_image)) <= 1 and len(set(self.row_seq_len)) <= 1

    def row(self, r: int) -> "PruneStats":
        """Row ``r``'s own record (batch size 1): its image tokens per layer, its kept indices at the layers
        where it pruned, its unpadded length and FLOPs; ``scores`` are row ``r`` of the batch's (over its slots)."""
        if not 0 <= r < self.batch_size:
            raise IndexError(f"row {r} of a batch of {self.batch_size}")
        counts = self.row_image_tokens[r]
        kept = {}
        for i, t in self.kept_image_indices.items():
            before = counts[i - 1] if i > 0 else self.row_n_image[r]
            if counts[i] < before:
                kept[i] = t[r:r + 1, :counts[i]]
        return PruneStats(
            self.num_layers, self.hidden_size, self.ffn_size, self.positions, list(counts), self.row_n_image[r],
            self.row_seq_len[r], 1, kept, {i: s[r:r + 1] for i, s in self.scores.items()}, self.prefills,
            [list(counts)], [self.row_n_image[r]], [self.row_seq_len[r]],
            {i: m[r:r + 1, :counts[i]] for i, m in self.merged.items() if i in kept})

    @property
    def tokens_per_layer(self) -> List[int]:
        """All tokens (text included) entering each layer, per sequence."""
        text = self.seq_len - self.n_image_tokens
        return [text + n for n in self.image_tokens_per_layer]

    @property
    def avg_image_tokens_per_layer(self) -> float:
        return sum(self.image_tokens_per_layer) / max(1, len(self.image_tokens_per_layer))

    def flops(self, formula: str = "fastv") -> PrefillFlops:
        """Prefill FLOPs of one sequence under ``formula`` ("fastv" or "swiglu")."""
        return prefill_flops(self.tokens_per_layer, self.seq_len, self.hidden_size, self.ffn_size, formula)

    @property
    def prefill_flops(self) -> Optional[PrefillFlops]:
        """Prefill FLOPs with FastV's formula (the default); None before any prefill."""
        return self.flops("fastv") if self.prefills else None

    def to_dict(self) -> dict:
        """JSON-ready summary (no tensors); a batch whose rows differ adds each row's under ``rows``."""
        f = self.prefill_flops
        out = {
            "n_image_tokens": self.n_image_tokens,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "image_tokens_per_layer": list(self.image_tokens_per_layer),
            "avg_image_tokens_per_layer": self.avg_image_tokens_per_layer,
            "prefill_flops": None if f is None else f.pruned,
            "prefill_flops_unpruned": None if f is None else f.unpruned,
            "prefill_flops_ratio": None if f is None else f.ratio,
            "flops_formula": "fastv",
            "positions": self.positions,
        }
        if self.batch_size > 1 and not self.uniform:
            out["rows"] = [self.row(r).to_dict() for r in range(self.batch_size)]
        return out
