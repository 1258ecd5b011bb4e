"""HiPrune: hierarchical attention in the vision tower (anchors, buffers, registers), before the decoder."""
from .base import Method, register_method

register_method(Method(
    "hiprune", "oneshot", "hiprune",
    "before the decoder (K=0) keep a few anchors by an object layer's received attention in the vision tower, "
    "their 4 grid neighbours, and registers by the deep layer's received attention",
    source="Liu et al., HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision Encoders "
           "(2025); Danielement321/HiPrune: object layer 9, deep layer = select layer -2, alpha 0.1, head mean "
           "then query mean, 192 / 128 / 64 of 576 kept",
    defaults=dict(ratio=0.666, layer=0, positions="renumber", options=dict(alpha=0.1, object_layer=None)),
    note="R = 0.666 keeps 192 of 576 (R = 0.777 / 0.888: 128 / 64). object_layer None scales the official "
         "layers to the tower: 9 of 24 on towers with CLS (9 on CLIP-L), 16 of 32 on towers without (16 on "
         "Qwen2.5-VL, the official Qwen value). Buffers are "
         "clamped into each anchor's own image / tile / crop grid (the official code clamps into [0, 575] of one "
         "image and wraps across rows, which this keeps within a grid); registers never repeat anchors (the "
         "official Qwen rule's subtract-1 can). Qwen scores are query means, not sums (the same ranking within "
         "an image). One budget for all images of a prompt (the official code: per crop). Positions renumbered "
         "(original on M-RoPE models, as the official Qwen code). Image inputs only."))
