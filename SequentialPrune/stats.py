"""What a pruner observed in its last prefill."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

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
    """
    num_layers: int
    hidden_size: int
    ffn_size: int
    positions: Optional[str] = None   # "original" or "renumber" (None: nothing is pruned)
    image_tokens_per_layer: List[int] = field(default_factory=list)
    n_image_tokens: int = 0
    seq_len: int = 0
    batch_size: int = 0
    kept_image_indices: Dict[int, torch.Tensor] = field(default_factory=dict)
    scores: Dict[int, torch.Tensor] = field(default_factory=dict)
    prefills: int = 0

    def reset(self, n_image: int, seq_len: int, batch: int) -> None:
        self.n_image_tokens, self.seq_len, self.batch_size = n_image, seq_len, batch
        self.image_tokens_per_layer = [n_image] * self.num_layers
        self.kept_image_indices, self.scores = {}, {}

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
        """JSON-ready summary (no tensors)."""
        f = self.prefill_flops
        return {
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
