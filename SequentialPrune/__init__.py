"""Sequential Prune: layer-by-layer visual-token pruning for stock Hugging Face VLMs.

>>> from SequentialPrune import PruneConfig, apply_pruning
>>> with apply_pruning(model, PruneConfig("sequential", ratio=0.75, layer=2)) as pruner:
...     out = model.generate(**inputs, max_new_tokens=32)
>>> pruner.stats.image_tokens_per_layer
"""
from .adapters import ADAPTERS, FamilyAdapter, adapter_for, register_adapter
from .config import PruneConfig
from .engine import Pruner, apply_pruning
from .flops import FLOPS_FORMULAS, PrefillFlops, prefill_flops
from .methods import METHODS, Method, register_method
from .schedules import SCHEDULES, Schedule, register_schedule
from .scorers import SCORERS, Scorer, ScoreInputs, register_scorer
from .stats import PruneStats

__version__ = "0.2.0"
__all__ = [
    "PruneConfig", "apply_pruning", "Pruner", "PruneStats", "PrefillFlops", "prefill_flops",
    "METHODS", "SCHEDULES", "SCORERS", "ADAPTERS", "FLOPS_FORMULAS", "Method", "Schedule", "Scorer", "ScoreInputs",
    "FamilyAdapter", "register_method", "register_schedule", "register_scorer", "register_adapter", "adapter_for",
]
