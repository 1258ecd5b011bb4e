"""Vision-tower attention: the image tokens the vision encoder itself attends to most."""
from __future__ import annotations

from dataclasses import dataclass


from .base import Scorer, ScoreInputs, register_scorer


@register_scorer("vision_attention")
@dataclass
class VisionAttention(Scorer):
    """FasterVLM's [CLS] attention (Zhang et al. 2024): rank image tokens by the attention the vision tower's
    select layer pays them, captured without ``output_attentions`` (``vision_capture.py``). Towers with a CLS
    token (CLIP, InternViT) give the CLS query's row, head mean; towers without one (SigLIP, the Qwen towers)
    give the attention each token receives, head mean and query mean, as VisPruner does for SigLIP. The adapter
    pools the scores over the vision tokens that form one LLM token (Qwen's 2x2 merge, InternVL's pixel
    shuffle); LLaVA-NeXT / OneVision newline tokens score below every patch. All images of a prompt form one
    pool (each image's scores are about a distribution over its tokens, so images compete on equal terms)."""
    needs_vision = True

    def select(self, inp: ScoreInputs):
        if inp.vision is None:
            raise RuntimeError("the vision_attention scorer needs the vision tower's scores, which were not captured")
        v = inp.vision.to(inp.visual.device)
        scores = v.gather(1, inp.image_index.clamp(min=0).clamp(max=max(v.shape[1] - 1, 0)))
        return scores.masked_fill(~inp.visual, float("-inf"))
