"""DART: keep the image tokens least duplicated by a few pivots."""
from .base import Method, register_method

register_method(Method(
    "dart", "oneshot", "dart",
    "before layer K keep the image tokens least cosine-similar to 4 image + 4 text pivots (largest key L1 norms)",
    source="Wen et al., Stop Looking for Important Tokens (EMNLP 2025); ZichenWen1/DART: K=2, 4 + 4 pivots, "
           "max_num_trunction 128, which keeps 4 + 8 x 16 = 132 image tokens",
    defaults=dict(ratio=0.7708, layer=2, options=dict(image_pivots=4, text_pivots=4)),
    note="R = 0.7708 keeps the 132 tokens the official code keeps for its '128' setting (the paper reports 128); "
         "other R keep exactly int(N(1-R))."))
