"""One adapter per model family: where the decoder is and which ids are visual tokens.

The engine asks an adapter and never names a model. A model whose class is not
registered here is refused: pruning that silently does nothing is worse than
an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch.nn as nn


@dataclass(frozen=True)
class FamilyAdapter:
    """How to find the pieces of one model family."""
    family: str
    classes: Tuple[str, ...]              # accepted model class names (top-level and inner)
    visual_token_attrs: Tuple[str, ...]   # config attributes holding visual token ids
    pixel_keys: Tuple[str, ...]           # forward arguments that carry visual inputs
    text_config_key: str = "text_config"

    def multimodal_model(self, model: nn.Module) -> nn.Module:
        """The module that owns ``language_model`` (the inner ``XModel``)."""
        inner = model if hasattr(model, "language_model") and isinstance(model.language_model, nn.Module) else \
            getattr(model, "model", None)
        if inner is None or not isinstance(getattr(inner, "language_model", None), nn.Module):
            raise ValueError(f"{type(model).__name__}: could not find its language_model; the layout of this "
                             f"transformers version is not supported by the {self.family} adapter")
        return inner

    def text_model(self, model: nn.Module) -> nn.Module:
        return self.multimodal_model(model).language_model

    def layers(self, model: nn.Module) -> List[nn.Module]:
        layers = getattr(self.text_model(model), "layers", None)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise ValueError(f"{type(model).__name__}: its text model has no decoder `layers`")
        return list(layers)

    def text_config(self, model: nn.Module):
        return getattr(model.config, self.text_config_key)

    def visual_token_ids(self, model: nn.Module) -> Tuple[int, ...]:
        ids = []
        for attr in self.visual_token_attrs:
            v = getattr(model.config, attr, None)
            if v is not None:
                ids.append(int(v))
        if not ids:
            raise ValueError(f"{type(model).__name__}: config has none of {self.visual_token_attrs}")
        return tuple(ids)


ADAPTERS: Dict[str, FamilyAdapter] = {}


def register_adapter(adapter: FamilyAdapter) -> FamilyAdapter:
    """Add ``adapter`` for each of its class names."""
    for cls in adapter.classes:
        ADAPTERS[cls] = adapter
    return adapter


register_adapter(FamilyAdapter(
    "llava", ("LlavaForConditionalGeneration", "LlavaModel"),
    ("image_token_id",), ("pixel_values",)))
register_adapter(FamilyAdapter(
    "llava_next", ("LlavaNextForConditionalGeneration", "LlavaNextModel"),
    ("image_token_id",), ("pixel_values",)))
register_adapter(FamilyAdapter(
    "qwen2_vl", ("Qwen2VLForConditionalGeneration", "Qwen2VLModel"),
    ("image_token_id", "video_token_id"), ("pixel_values", "pixel_values_videos")))
register_adapter(FamilyAdapter(
    "qwen2_5_vl", ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel"),
    ("image_token_id", "video_token_id"), ("pixel_values", "pixel_values_videos")))


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """The adapter of ``model``'s class, or a ValueError listing the supported ones."""
    name = type(model).__name__
    if name not in ADAPTERS:
        raise ValueError(
            f"{name} is not supported by SequentialPrune (supported: {sorted(ADAPTERS)}). "
            "Pass the vision-language model itself, e.g. LlavaForConditionalGeneration.")
    return ADAPTERS[name]
