"""Sequential Prune: layer-by-layer visual-token pruning for stock Hugging Face VLMs.

>>> from SequentialPrune import PruneConfig, apply_pruning
>>> with apply_pruning(model, PruneConfig("sequential", ratio=0.75, layer=2)) as pruner:
...     out = model.generate(**inputs, max_new_tokens=32)
>>> pruner.stats.image_tokens_per_layer
"""
import importlib

# name -> the module that defines it. Loaded on first use, so that a tool that only needs a light part of the
# package (the evaluation front end checking $LMUData, collect_results.py) does not import torch first.
_EXPORTS = {
    "ADAPTERS": "adapters", "FamilyAdapter": "adapters", "adapter_for": "adapters", "register_adapter": "adapters",
    "PruneConfig": "config", "Pruner": "engine", "apply_pruning": "engine",
    "FLOPS_FORMULAS": "flops", "PrefillFlops": "flops", "prefill_flops": "flops",
    "METHODS": "methods", "Method": "methods", "register_method": "methods",
    "SCHEDULES": "schedules", "Schedule": "schedules", "register_schedule": "schedules",
    "SCORERS": "scorers", "Scorer": "scorers", "ScoreInputs": "scorers", "register_scorer": "scorers",
    "PruneStats": "stats",
}

__version__ = "0.2.0"
__all__ = [
    "PruneConfig", "apply_pruning", "Pruner", "PruneStats", "PrefillFlops", "prefill_flops",
    "METHODS", "SCHEDULES", "SCORERS", "ADAPTERS", "FLOPS_FORMULAS", "Method", "Schedule", "Scorer", "ScoreInputs",
    "FamilyAdapter", "register_method", "register_schedule", "register_scorer", "register_adapter", "adapter_for",
]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
