"""VisionZip: dominant image tokens plus a few merged contextual ones, before the decoder."""
from .base import Method, register_method

register_method(Method(
    "visionzip", "oneshot", "visionzip",
    "before the decoder (K=0) keep the dominant image tokens by the vision select layer's [CLS] attention "
    "(attention received on towers without CLS) and merge the rest into contextual tokens by key similarity",
    source="Yang et al., VisionZip: Longer is Better but Not Necessary in Vision Language Models (CVPR 2025); "
           "dvlab-research/VisionZip: select layer -2, dominant + contextual 162+30 / 108+20 / 54+10 for "
           "192 / 128 / 64 kept (dominant counts CLS)",
    defaults=dict(ratio=0.666, layer=0, positions="renumber", options=dict(contextual_ratio=0.15625)),
    note="R = 0.666 keeps 192 of 576 (R = 0.777 / 0.888: 128 / 64); contextual = round(kept * contextual_ratio), "
         "5/32 giving the paper's 30 / 20 / 10. Merging is done on the pre-projector features and the merged "
         "tokens then go through the model's own projector. Each contextual token sits in its target's slot (the "
         "official code appends them after the dominant tokens); on LLaVA-1.5 each image's CLS feature takes the "
         "first free slot of its image (LLaVA has no CLS slot). Positions are renumbered contiguously as in the "
         "official shortened sequence (M-RoPE models: each kept slot's own position, a merged token's = its "
         "target's). All images of a prompt share one budget and one merge pool (the official code: per image). "
         "Towers without CLS rank by attention received; InternVL's CLS has no slot (its projector reads 2x2 "
         "groups). LLaVA-NeXT / OneVision: keys and features laid out by the model's own packing (unpadded), one "
         "pool over the crops (the official code: per crop), each crop's CLS in a free slot, newline tokens "
         "neither kept nor merged. Image inputs only."))
