"""Custom per-layer schedules: {layer: kept fraction}, with any scorer."""
from .base import Method, register_method

register_method(Method(
    "custom", "custom", "attention",
    "your own {layer: fraction of N kept entering it}, e.g. '2:0.5,6:0.3', with any scorer (default attention)",
    defaults=dict()))
