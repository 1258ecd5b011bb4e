"""One adapter per model family; ``ADAPTERS`` maps class names to them, ``families()`` model types."""
from .base import ADAPTERS, CoordsContext, FamilyAdapter, adapter_for, families, model_class, register_adapter
from . import internvl, llava, qwen_vl  # noqa: F401  (registration)

__all__ = ["ADAPTERS", "CoordsContext", "FamilyAdapter", "adapter_for", "families", "model_class", "register_adapter"]
