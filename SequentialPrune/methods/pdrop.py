"""PyramidDrop: stage-wise pruning by each stage layer's own last-token attention."""
from .base import Method, register_method

register_method(Method(
    "pdrop", "stages", "pdrop",
    "before stage layers (8, 16, 24) keep lam, lam^2, lam^3 of N, ranked by that layer's own last-token "
    "attention; positions renumbered contiguously",
    source="Xing et al., PyramidDrop (CVPR 2025); Cooperx521/PyramidDrop: layer_list [8,16,24], "
           "image_token_ratio_list [0.5,0.25,0.125] (lam = 0.5, R = 0.875)",
    defaults=dict(ratio=0.875, positions="renumber", options=dict(stages=(8, 16, 24))),
    note="R sets lam = (1-R)^(1/stages). On M-RoPE models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), which PDrop never "
         "supported, positions default to the original ones."))
