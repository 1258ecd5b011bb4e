"""Where a family's vision tower is, and how its per-vision-token scores become per-LLM-image-token scores.

``VisionSpec`` is the vision half of a ``FamilyAdapter`` (its ``vision`` field), read by
``SequentialPrune.vision_capture``. The statistic is taken at the layer whose output the projector reads
(``vision_feature_layer``; the last block for the Qwen towers), as FasterVLM takes it at LLaVA's select layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
import torch.nn as nn

NEWLINE_SCORE = -1.0  # below every attention probability: LLaVA-NeXT / OneVision newline tokens go first


@dataclass(frozen=True)
class MergeSpec:
    """What a scorer of the tower's keys or features (VisionZip, VisPruner) needs of a family, beyond the score:
    per LLM image token in prompt order, the merge metric and the pre-projector feature, and the family's own
    projector to map merged features.

    projector: ``fn(model) -> module`` whose forward's first argument is the pre-projector features.
    token_keys: ``fn(model, records) -> (N, Dh)`` the select layer's head-mean keys, averaged over the vision
    tokens that form each LLM token.
    token_features: ``fn(model, records) -> (N, C)`` each LLM token's projector input (a 2x2 group's features
    concatenated where the projector concatenates them).
    project: ``fn(model, x (n, C)) -> (n, D)`` the projector applied to such rows.
    cls_features: ``fn(model, records) -> [(index of the image's first LLM token, CLS feature (C,))]`` for
    families whose projector can take the CLS token (LLaVA); None: no CLS slot.
    token_pool: ``fn(model, records) -> (N,) bool``: the LLM tokens laid out from the tower's patches, which a
    merging scorer may keep or merge; False for tokens the tower never saw (LLaVA-NeXT / OneVision newline
    tokens, whose keys and features are zeros). None: every token.
    """
    projector: Callable[[nn.Module], nn.Module]
    token_keys: Callable
    token_features: Callable
    project: Callable
    cls_features: Optional[Callable] = None
    token_pool: Optional[Callable] = None


@dataclass(frozen=True)
class VisionSpec:
    """A family's vision tower, for vision-side scorers.

    layers: ``fn(model) -> [attention modules]`` of the tower, in layer order.
    layer: ``fn(model) -> int`` index (into ``layers``) of the layer the projector reads.
    token_scores: ``fn(model, records) -> (N,)`` one score per LLM image token of every ``get_image_features``
    call recorded (``vision_capture.VisionRecord``), in the order the model scatters them into the prompt.
    token_units: ``fn(model, records) -> (N,)`` long: per LLM image token, in the same order, the vision-encoder
    input it comes from (an image; a crop or tile where the family splits an image into several), numbered over
    the calls recorded; -1 for a token of none (LLaVA-NeXT / OneVision newline tokens). Per-image budgets
    (``scope="image"``) split a prompt's kept tokens over these units. None: every token is one pool.
    refusal: a reason vision-side scorers cannot run on this family.
    merge: the family's ``MergeSpec`` (scorers of keys or features); None: they are refused with ``merge_refusal``.
    """
    layers: Callable[[nn.Module], List[nn.Module]]
    layer: Callable[[nn.Module], int]
    token_scores: Callable
    token_units: Optional[Callable] = None
    config_key: str = "vision_config"
    refusal: Optional[str] = None
    merge: Optional[MergeSpec] = None
    merge_refusal: str = "no merge mapping is implemented for it"

    def attention_module(self, model: nn.Module) -> nn.Module:
        layers = self.layers(model)
        i = self.layer(model)
        if not 0 <= i < len(layers):
            raise ValueError(f"{type(model).__name__}: vision layer {i} is outside the tower's {len(layers)} layers")
        return layers[i]

    @staticmethod
    def has_cls(model: nn.Module) -> bool:
        """Whether the tower prepends a CLS token (CLIP's ``class_embedding``, InternViT's ``cls_token``)."""
        return any(n.endswith(("class_embedding", "cls_token")) for n, _ in model.named_parameters())


def feature_layer_index(model: nn.Module, n_layers: int) -> int:
    """The layer whose output ``hidden_states[vision_feature_layer]`` is (``hidden_states[0]`` is the embeddings,
    so ``-1`` is the last layer and ``-2`` LLaVA's select layer)."""
    v = getattr(model.config, "vision_feature_layer", -1)
    if not isinstance(v, int):
        raise ValueError(f"{type(model).__name__}: vision_feature_layer {v!r} concatenates several layers; "
                         "vision-side scorers need one select layer")
    i = n_layers + v if v < 0 else v - 1
    if i < 0:
        raise ValueError(f"{type(model).__name__}: vision_feature_layer {v} selects the patch embeddings, which "
                         "no attention layer produced")
    return i


def select_strategy(model, record) -> str:
    """The ``vision_feature_select_strategy`` the call used (``"default"`` drops token 0)."""
    return record.call.get("vision_feature_select_strategy") or model.config.vision_feature_select_strategy


def patch_scores(model, record) -> torch.Tensor:
    """``(crops, T')`` scores of the tokens the projector receives from one CLIP / SigLIP / InternViT call:
    received attention divided by the queries (a mean), token 0 dropped under the ``"default"`` strategy."""
    s = torch.cat(record.chunks, 0)
    if record.statistic == "received":
        s = s / s.shape[-1]
    return s[:, 1:] if select_strategy(model, record) == "default" else s


def patch_tensors(model, record, name: str) -> torch.Tensor:
    """``(crops, T', C)``: a per-vision-token tensor of one CLIP / SigLIP / InternViT call (``record.keys``),
    token 0 dropped under the ``"default"`` strategy, as :func:`patch_scores` does for the score."""
    s = torch.cat(getattr(record, name), 0)
    return s[:, 1:] if select_strategy(model, record) == "default" else s


def encoder_layers(tower: nn.Module) -> List[nn.Module]:
    """CLIP / SigLIP attention modules (``vision_model.encoder.layers[i].self_attn``, or without ``vision_model``)."""
    return [layer.self_attn for layer in getattr(tower, "vision_model", tower).encoder.layers]


def inner_model(model: nn.Module) -> nn.Module:
    """The module that owns ``language_model`` and ``get_image_features`` (the inner ``XModel``)."""
    return model if isinstance(getattr(model, "language_model", None), nn.Module) else model.model
