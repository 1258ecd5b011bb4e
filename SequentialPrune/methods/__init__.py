"""Methods: a schedule plus a scorer, with their paper's defaults. One file per method."""
from .base import METHODS, Method, register_method
from . import custom, dart, divprune, fastervlm, fastv, none, pdrop, random, sequential, spatial  # noqa: F401

__all__ = ["METHODS", "Method", "register_method"]
