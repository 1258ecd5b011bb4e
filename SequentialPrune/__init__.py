"""Sequential Prune: layer-by-layer visual-token pruning for stock Hugging Face VLMs.

>>> from SequentialPrune import PruneConfig, apply_pruning
>>> with apply_pruning(model, PruneConfig("sequential", ratio=0.75, layer=2)) as pruner:
...     out = model.generate(**inputs, max_new_tokens=32)
>>> pruner.stats.image_tokens_per_layer
"""
from .adapters import ADAPTERS, FamilyAdapter, adapter_for, register_adapter
from .config import METHODS, PruneConfig
from .engine import Pruner, apply_pruning
from .flops import FLOPS_FORMULAS, PrefillFlops, prefill_flops
from .schedules import SCHEDULES, register_schedule
from .scorers import SCORERS, Scorer, register_scorer
from .stats import PruneStats

__version__ = "0.1.0"
__all__ = [
    "PruneConfig", "apply_pruning", "Pruner", "PruneStats", "PrefillFlops", "prefill_flops",
    "METHODS", "SCHEDULES", "SCORERS", "ADAPTERS", "FLOPS_FORMULAS", "Scorer", "FamilyAdapter",
    "register_schedule", "register_scorer", "register_adapter", "adapter_for",
]
