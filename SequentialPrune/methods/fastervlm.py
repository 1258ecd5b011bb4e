"""FasterVLM: the image tokens the vision encoder's [CLS] attends to most, before the decoder."""
from .base import Method, register_method

register_method(Method(
    "fastervlm", "oneshot", "vision_attention",
    "before the decoder (K=0) keep the image tokens with the highest [CLS] attention at the vision select layer "
    "(attention received on towers without CLS)",
    source="Zhang et al., [CLS] Attention is All You Need for Training-Free Visual Token Pruning (FasterVLM, "
           "2024); Theia-4869/FasterVLM: select layer -2, head mean, 144/58/29 of 576 kept (R=0.75; 58 and 29 are "
           "round(57.6) and round(28.8), R=0.899 / 0.9496 here, where int(N(1-R)) is kept)",
    defaults=dict(ratio=0.75, layer=0, positions="renumber"),
    note="Positions are renumbered contiguously, as the official code shortens the sequence (original positions "
         "on M-RoPE models). The official code keeps a per-image (per-crop) budget on LLaVA-1.5 / NeXT without "
         "unpadding or newlines; here all images of a prompt share one budget, the stock packing is kept and "
         "newline tokens are dropped first. Towers without CLS (SigLIP, Qwen) use the attention each token "
         "receives, pooled per LLM token. Image inputs only (video tokens are refused)."))
