"""CDPruner: a conditional DPP over the image embeddings, before the decoder."""
from .base import Method, register_method

register_method(Method(
    "cdpruner", "oneshot", "cdpruner",
    "before the decoder (K=0) keep the image embeddings a greedy DPP picks, its kernel the embeddings' cosine "
    "similarity weighted by each one's (negated, min-max normalised) relevance to the instruction",
    source="Zhang et al., Beyond Attention or Similarity: Maximizing Conditional Diversity for Token Pruning in "
           "MLLMs (CDPruner, 2025); Theia-4869/CDPruner: post-projector similarity, CLIP text relevance negated "
           "and min-max normalised, no theta, README examples 128 and 64 of 576",
    defaults=dict(ratio=0.777, layer=0, positions="renumber", options=dict(theta=None)),
    note="R = 0.777 keeps 128 of 576 (R = 0.888: 64). Relevance uses the LLM's own input embeddings of the text "
         "tokens after the last image token (the question, with the chat template's closing tokens), on every "
         "family, where the official code uses CLIP's text tower and its visual projection on LLaVA (HF "
         "checkpoints ship no CLIP text tower; OpenVINO GenAI does the same for Qwen). Normalised per prompt (the "
         "official code: over the whole batch tensor). The DPP runs in float64 (the official: float32); beyond "
         "the kernel's rank the remaining picks go by relevance (the official code divides by zero). All images "
         "of a prompt share one budget. Positions renumbered (original on M-RoPE models). With "
         "cache_mode='recompute' the tokens generated so far join the instruction text at each step."))
