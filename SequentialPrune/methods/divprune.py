"""DivPrune: a max-min diverse subset of the image tokens, before the decoder."""
from .base import Method, register_method

register_method(Method(
    "divprune", "oneshot", "divprune",
    "before the decoder (K=0) keep a greedy max-min diverse subset of the image embeddings (cosine distance)",
    source="Alvar et al., DivPrune (CVPR 2025); vbdi/divprune: SUBSET_RATIO 0.098 kept (56 of 576), before the LLM",
    defaults=dict(ratio=0.902, layer=0, positions="renumber"),
    note="Positions are renumbered contiguously as in the official LLaVA code (original positions on M-RoPE "
         "models)."))
