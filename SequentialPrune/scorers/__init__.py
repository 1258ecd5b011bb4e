"""Scorers: which image tokens stay. One file per scorer; ``SCORERS`` is the registry."""
from .base import SCORERS, Scorer, ScoreInputs, keep_mask, register_scorer
from . import attention, dart, divprune, pdrop, random, spatial, vision_attention  # noqa: F401  (registration)

__all__ = ["SCORERS", "Scorer", "ScoreInputs", "keep_mask", "register_scorer"]
