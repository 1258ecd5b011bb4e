"""The pruned model classes of the MileBench front end: the core's loading and generation, the sample's inputs
(``inputs``), the original's decoding settings per dataset, and a bad sample failing alone.

Decoding (the original's ``configs/model_configs.yaml``, ``generate.py``, ``workers/model_workers.py``): greedy,
``max_new_tokens`` 512 (100 on ANLS_DocVQA, 50 on Rouge_OCR_VQA), ``min_new_tokens`` 1, the template's stop
keyword (paper protocol), the answer decoded without special tokens and stripped; on the paper protocol on GPU
under bf16 autocast (the weights load in the protocol's dtype, float16 as the original's LLaVA builder did).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional, Tuple

import torch

from SequentialPrune.evaluation.catalog import FAMILIES
from SequentialPrune.evaluation.pruned_model import PrunedModel
from SequentialPrune.evaluation.setting import ModelRun

from .data import DOCVQA, OCRVQA, Sample
from .inputs import input_builder

FAIL_PREFIX = "[MileBench]"
MAX_NEW_TOKENS = 512
DATASET_MAX_NEW_TOKENS = {DOCVQA: 100, OCRVQA: 50}
MIN_NEW_TOKENS = 1
AUTOCAST = "bfloat16"  # the worker's torch.cuda.amp.autocast(dtype=torch.bfloat16)


def decoding_values(max_new_tokens_flag, configured=None) -> dict:
    """The protocol values this front end adds to a run (they enter its identity): ``--max-new-tokens`` replaces
    every limit; a ``--model_configs`` length (``configured``) only the default one, as in the original."""
    return dict(milebench_max_new_tokens=max_new_tokens_flag or configured or MAX_NEW_TOKENS,
                milebench_dataset_max_new_tokens={} if max_new_tokens_flag else dict(DATASET_MAX_NEW_TOKENS),
                min_new_tokens=MIN_NEW_TOKENS)


class MileBenchModel(PrunedModel):
    """One family's model under pruning, answering :class:`~.data.Sample` rows."""

    FAIL_PREFIX = FAIL_PREFIX

    def __init__(self, run: ModelRun):
        self._load_pruned(run)
        self.inputs = input_builder(self.processor, run)
        self._eos = self.model.generation_config.eos_token_id
        self.autocast = AUTOCAST if (run.get("protocol") == "paper" and self.device.startswith("cuda")) else None

    def _settings_for(self, dataset: str) -> None:
        limit = self.run.get("milebench_dataset_max_new_tokens", {}).get(dataset,
                                                                      self.run.get("milebench_max_new_tokens"))
        eos = [] if self._eos is None else [self._eos] if isinstance(self._eos, int) else list(self._eos)
        stop = self.inputs.stop_ids(dataset)
        self.generate_kwargs.update(max_new_tokens=limit, min_new_tokens=self.run.get("min_new_tokens"))
        if stop:  # the keyword criterion, and the checkpoint's EOS as its generate stopped at
            self.generate_kwargs["eos_token_id"] = sorted(set(eos) | set(stop))

    def model_inputs(self, sample: Sample, dataset: str) -> Dict:
        inputs = {k: v.to(self.device) for k, v in self.inputs(sample, dataset).items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return inputs

    def _answer(self, inputs: Dict, dataset: str) -> str:
        ctx = torch.autocast("cuda", dtype=getattr(torch, self.autocast)) if self.autocast else contextlib.nullcontext()
        with ctx:
            new = self._generate(inputs, dataset)
        return self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()

    def answer_batch(self, items: List[Tuple[object, Callable[[], Sample]]], dataset: str
                     ) -> List[Tuple[Optional[Sample], str]]:
        """:meth:`answer` for several samples in one generate call (any image counts: each sample is pruned by
        its own schedule). A sample whose prompt cannot be built fails alone; if the call fails, each sample is
        answered again alone, so one bad sample fails only itself."""
        self._settings_for(dataset)
        out: List[Optional[Tuple[Optional[Sample], str]]] = [None] * len(items)
        ready = []  # (position, sample id, sample, inputs)
        for j, (sid, build) in enumerate(items):
            built: List[Sample] = []

            def inputs(_row, ds, build=build, built=built):
                built.append(build())
                return self.model_inputs(built[0], ds)

            prepared = self.rows.build_prompt(inputs, {"index": sid}, dataset)
            if self.rows.pending is not None:
                out[j] = (built[0] if built else None, self.rows.generate(None, prepared, dataset))
            else:
                ready.append((j, sid, built[0], prepared))
        if len(ready) > 1:
            try:
                ctx = torch.autocast("cuda", dtype=getattr(torch, self.autocast)) if self.autocast else \
                    contextlib.nullcontext()
                with ctx:
                    new = self._generate_batch([r[3] for r in ready], [r[1] for r in ready], dataset)
                for (j, _, sample, _), ids in zip(ready, new):
                    out[j] = (sample, self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip())
                ready = []
            except Exception:  # (a full disk or ^C is no Exception: it stops the run)
                pass  # each sample again alone, below: the failure is recorded against the sample that fails
        for j, sid, sample, inputs in ready:
            self.rows.note({"index": sid}, dataset)
            out[j] = (sample, self.rows.generate(self._answer, inputs, dataset))
        return out

    def answer(self, sample_id, build: Callable[[], Sample], dataset: str) -> Tuple[Optional[Sample], str]:
        """(the sample, the model's answer), or (None if its prompt could not be built, the failure marker naming
        the sample): a bad sample fails alone, recorded in ``seqprune_failures``."""
        self._settings_for(dataset)
        built: List[Sample] = []

        def inputs(_row, ds):
            built.append(build())
            return self.model_inputs(built[0], ds)

        prepared = self.rows.build_prompt(inputs, {"index": sample_id}, dataset)
        answer = self.rows.generate(self._answer, prepared, dataset)
        return (built[0] if built else None), answer


def _family_class(family: str, protocols) -> type:
    return type(f"MileBench_{family}", (MileBenchModel,), {"FAMILY": family, "PROTOCOLS": protocols})


# family -> class, one per family the evaluation layer runs: LLaVA-1.5 has the paper protocol (the original's
# worker), every family its chat template (inputs.ChatTemplateInputs needs only a processor).
PAPER_FAMILIES = ("llava",)
CLASSES = {fam: _family_class(fam, ("paper", "hf") if fam in PAPER_FAMILIES else ("hf",)) for fam in FAMILIES}
