"""The ``lmms_eval.models`` entry point: one ``ModelManifest`` per model name we give lmms-eval.

It names classes by path and imports no model code, so lmms-eval's start-up
stays cheap; the names come from the same table as the classes
(``model.BASE_BY_MODEL_TYPE``), read here without importing torch.
"""
from __future__ import annotations

CLASS_MODULE = "SequentialPrune.frontends.lmms_eval.model"
# the checkpoint model_types we register (kept equal to model.BASE_BY_MODEL_TYPE by the tests)
MODEL_TYPES = ("llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "llava_onevision", "internvl")


def names() -> dict:
    """lmms-eval model id -> class name: ``seqprune`` (dispatches on the checkpoint) and ``seqprune_<model_type>``."""
    out = {"seqprune": "SeqPrune"}
    out.update({f"seqprune_{mt}": f"SeqPrune_{mt}" for mt in MODEL_TYPES})
    return out


def manifests():
    """The manifests lmms-eval registers (called by ``ModelRegistryV2.load_entrypoint_manifests``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=mid, simple_class_path=f"{CLASS_MODULE}.{cls}") for mid, cls in names().items()]
