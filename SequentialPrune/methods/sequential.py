"""Sequential Prune: drop a further step of the image tokens at each layer from K on."""
from .base import Method, register_method

register_method(Method(
    "sequential", "stepwise", "attention",
    "from layer K drop a further `step` of N per layer, ranked by the previous layer's last-token attention, "
    "until R",
    source="LeeBumSeok/Tokenpruning (commit 0898f4a): step 10%, and the paper's grid R 0.5/0.75/0.9 x K 2/3/5",
    defaults=dict(ratio=0.75, layer=2, step=0.1)))
