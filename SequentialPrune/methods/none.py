"""The unpruned model (the hooks only count tokens)."""
from .base import Method, register_method

register_method(Method("none", "none", "attention", "the model untouched", defaults=dict(ratio=0.0)))
