"""A method: a named schedule + scorer pair with its paper's defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

METHODS: Dict[str, "Method"] = {}


@dataclass(frozen=True)
class Method:
    """One pruning method.

    ``defaults`` fills the ``PruneConfig`` fields left unset (``ratio``,
    ``layer``, ``step``, ``positions``, ``options``): they are the method's
    paper's defaults for LLaVA-1.5-7B (576 image tokens, 32 layers) unless
    ``note`` says otherwise. ``source`` cites where they come from.
    """
    name: str
    schedule: str
    scorer: str
    summary: str
    source: str = ""
    defaults: dict = field(default_factory=dict)
    note: str = ""


def register_method(method: Method) -> Method:
    """Add ``method`` to ``METHODS``."""
    METHODS[method.name] = method
    return method
