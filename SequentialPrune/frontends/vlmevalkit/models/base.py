"""What every VLMEvalKit model class of ours shares beyond the core's loading and generation: telling the
core which row runs (VLMEvalKit does not pass the index to ``generate``), and turning a bad row into a
recorded failure with VLMEvalKit's own failure marker."""
from __future__ import annotations

from SequentialPrune.evaluation.pruned_model import PrunedModel

from .. import image_files
from ..run_files import RETRIED_FAIL_MSG


class VLMEvalKitPrunedModel(PrunedModel):
    """The row hooks; the model classes put it before VLMEvalKit's class of their family."""

    # VLMEvalKit counts predictions holding its FAIL_MSG as failed and generates them again on a rerun.
    FAIL_PREFIX = RETRIED_FAIL_MSG

    def set_dump_image(self, dump_image_func):
        dataset = getattr(dump_image_func, "__self__", None) or getattr(dump_image_func, "_seqprune_dataset", None)
        if dataset is not None:  # the files this protocol's model reads (image_files.py)
            dump_image_func = image_files.install(dataset, self.run.get("protocol"))
        super().set_dump_image(dump_image_func)
        watch_dataset(dataset, self.rows)

    def build_prompt(self, line, dataset=None):
        return self.rows.build_prompt(super().build_prompt, line, dataset)

    def generate(self, message, dataset=None):
        return self.rows.generate(super().generate, message, dataset)


def watch_dataset(dataset, rows) -> None:
    """Route the prompts a VLMEvalKit dataset builds itself (its ``build_prompt``, wrapped once per instance)
    through ``rows``: the row is noted, and one whose prompt cannot be built becomes a recorded failure."""
    if dataset is None or getattr(dataset, "_seqprune_rows", None) is rows:
        return
    orig = dataset.build_prompt
    name = getattr(dataset, "dataset_name", None)

    def build_prompt(line, *args, **kwargs):
        return rows.build_prompt(lambda ln, _ds: orig(ln, *args, **kwargs), line, name, getattr(dataset, "data", None))

    dataset.build_prompt = build_prompt
    dataset._seqprune_rows = rows


def set_qwen_prompt_state(model, min_pixels, max_pixels, system_prompt) -> None:
    """What VLMEvalKit's Qwen prompt mixins and ``_prepare_content`` read, set without their ``__init__``
    (which asks for nvidia-smi and flash-attn and loads the model)."""
    model.min_pixels, model.max_pixels, model.total_pixels = min_pixels, max_pixels, None
    model.fps, model.nframe, model.FRAME_FACTOR = 2, 128, 2
    model.system_prompt, model.verbose, model.post_process = system_prompt, False, False
    model.use_audio_in_video = model.use_vllm = model.use_lmdeploy = False
