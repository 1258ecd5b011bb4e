"""One adapter per model family; ``ADAPTERS`` maps class names to them."""
from .base import ADAPTERS, CoordsContext, FamilyAdapter, adapter_for, register_adapter
from . import internvl, llava, qwen_vl  # noqa: F401  (registration)

__all__ = ["ADAPTERS", "CoordsContext", "FamilyAdapter", "adapter_for", "register_adapter"]
