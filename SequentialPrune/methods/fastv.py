"""FastV: one-shot pruning by the previous layer's last-token attention."""
from .base import Method, register_method

register_method(Method(
    "fastv", "oneshot", "attention",
    "before layer K keep the top int(N(1-R)) image tokens by layer K-1's last-token attention",
    source="Chen et al., An Image is Worth 1/2 Tokens After Layer 2 (ECCV 2024); pkunlp-icler/FastV: K=2, R=50%",
    defaults=dict(ratio=0.5, layer=2)))
