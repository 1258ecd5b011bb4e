"""Vision-tower attention: the image tokens the vision encoder itself attends to most."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Scorer, ScoreInputs, check_scope, keep_per_unit, register_scorer


@register_scorer("vision_attention")
@dataclass
class VisionAttention(Scorer):
    """FasterVLM's [CLS] attention (Zhang et al. 2024): rank image tokens by the attention the vision tower's
    select layer pays them, captured without ``output_attentions`` (``vision_capture.py``). Towers with a CLS
    token (CLIP, InternViT) give the CLS query's row, head mean; towers without one (SigLIP, the Qwen towers)
    give the attention each token receives, head mean and query mean, as VisPruner does for SigLIP. The adapter
    pools the scores over the vision tokens that form one LLM token (Qwen's 2x2 merge, InternVL's pixel
    shuffle); LLaVA-NeXT / OneVision newline tokens score below every patch.

    ``scope="image"`` (the official code's): each vision-encoder input (an image; a crop or tile where the family
    splits one, ``VisionSpec.token_units``) keeps its share of the prompt's kept tokens, in proportion to its
    tokens present (largest remainder), chosen within it; newline tokens only fill what the units cannot.
    ``scope="prompt"``: all image tokens of a prompt form one pool (each image's scores are about a distribution
    over its tokens, so images compete on equal terms)."""
    scope: str = "image"
    needs_vision = True

    def __post_init__(self):
        check_scope(self.scope)

    def select(self, inp: ScoreInputs):
        if inp.vision is None:
            raise RuntimeError("the vision_attention scorer needs the vision tower's scores, which were not captured")
        v = inp.vision.to(inp.visual.device)
        at = inp.image_index.clamp(min=0).clamp(max=max(v.shape[1] - 1, 0))
        scores = v.gather(1, at).masked_fill(~inp.visual, float("-inf"))
        if self.scope == "prompt" or inp.units is None:
            return scores
        units = inp.units.to(inp.visual.device).gather(1, at)
        return torch.stack([keep_per_unit(scores[r], inp.visual[r], units[r], inp.keep) for r in range(len(scores))])
