"""Methods: a schedule plus a scorer, with their paper's defaults. One file per method."""
from .base import METHODS, Method, register_method
from . import (cdpruner, custom, dart, divprune, fastervlm, fastv, hiprune, none, pdrop, random,  # noqa: F401
               sequential, spatial, vispruner, visionzip)

__all__ = ["METHODS", "Method", "register_method"]
