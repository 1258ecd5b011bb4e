"""Spatial downsampling: an evenly spaced lattice of each image's tokens, before the decoder."""
from .base import Method, register_method

register_method(Method(
    "spatial", "oneshot", "spatial",
    "before the decoder (K=0) keep an evenly spaced lattice of each image's token grid",
    source="the downsampling baseline of VTC-Bench (Liao et al. 2025), done on tokens; no paper default: "
           "R=0.75 keeps a 12x12 lattice of LLaVA-1.5's 24x24 grid",
    defaults=dict(ratio=0.75, layer=0)))
