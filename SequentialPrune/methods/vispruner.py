"""VisPruner: important plus diverse image tokens from the vision tower, before the decoder."""
from .base import Method, register_method

register_method(Method(
    "vispruner", "oneshot", "vispruner",
    "before the decoder (K=0) keep important_ratio of the budget by the vision select layer's [CLS] attention "
    "(attention received on towers without CLS) and fill the rest by removing near-duplicate pre-projector features",
    source="Zhang et al., Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token Pruning in VLMs "
           "(VisPruner, ICCV 2025); Theia-4869/VisPruner: select layer -2, head mean, important_ratio 0.5, up to 8 "
           "duplicates removed per round; README example 128 of 576 (64 + 64)",
    defaults=dict(ratio=0.777, layer=0, positions="renumber", options=dict(important_ratio=0.5, per_round=8)),
    note="R = 0.777 keeps 128 of 576 (R = 0.666 / 0.888: 192 / 64; the official 64-token example uses "
         "important_ratio 0.75). A round drops at most the even-place half of the residual, and an odd residual "
         "is split unevenly (the official loop raises an IndexError in both cases). Positions are renumbered "
         "contiguously as the official code shortens the sequence (original positions on M-RoPE models). All "
         "images of a prompt share one budget (the official code: per image or crop). InternVL / Qwen compare "
         "each LLM token's projector input (its 2x2 patches' features concatenated); LLaVA-NeXT / OneVision lay "
         "the crops' features out by the model's own packing, newline tokens never candidates. Image inputs "
         "only."))
