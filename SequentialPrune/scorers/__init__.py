"""Scorers: which image tokens stay. One file per scorer; ``SCORERS`` is the registry."""
from .base import SCORERS, Scorer, ScoreInputs, Selection, keep_mask, register_scorer
from . import (attention, cdpruner, dart, divprune, hiprune, pdrop, random, spatial, vision_attention,  # noqa: F401
               vispruner, visionzip)

__all__ = ["SCORERS", "Scorer", "ScoreInputs", "Selection", "keep_mask", "register_scorer"]
