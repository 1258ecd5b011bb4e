"""Our pruned models as lmms-eval simple models (``generate_until``), batched.

One class per checkpoint ``model_type`` (``seqprune_llava``, ``seqprune_qwen2_vl``,
...) and ``seqprune``, which reads the checkpoint's ``model_type`` and runs it as
that family. Each resolves its setting once through the evaluation core
(``resolve_model``), locks and records its run folder (``run_record``), loads with
pruning and prefill timing (``PrunedModel``), and answers lmms-eval's requests in
sub-batches the engine prunes together (``batching``). Every answered row gets
one stats line; a row that cannot be answered gets a failure line, a printed
line and a marked prediction, and the others go on.
"""
from __future__ import annotations

import atexit
import copy
import json
import sys
import time
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from SequentialPrune.evaluation.catalog import FAMILIES, MODELS
from SequentialPrune.evaluation.pruned_model import PrunedModel
from SequentialPrune.evaluation.resolve import resolve_model
from SequentialPrune.evaluation.rows import FAILED_MARK
from SequentialPrune.evaluation.run_folder.identity import record_generation
from SequentialPrune.evaluation.run_folder.logs import FAILURES_DIR, safe_name
from SequentialPrune.evaluation.safe_io import WriteFailed, append_line, write_failure

from . import run_record
from .batching import sub_batches
from .inputs import SYSTEM_PROMPTS, build_inputs
from .model_args import ModelArgsError, parse_model_args

# checkpoint model_type -> our catalog model whose name (and default checkpoint) the lmms-eval model carries
BASE_BY_MODEL_TYPE: Dict[str, str] = {
    "llava": "llava_seqprune",
    "qwen2_vl": "qwen2vl_seqprune",
    "qwen2_5_vl": "qwen2_5vl_seqprune",
    "qwen3_vl": "qwen3vl_seqprune_2b",
    "qwen3_vl_moe": "qwen3vl_moe_seqprune",
    "llava_onevision": "llava_onevision_seqprune",
    "internvl": "internvl_seqprune",
}
DISPATCH_ID = "seqprune"
WINDOW = 8  # requests prepared per batch slot before grouping (a bound on the processed tensors held at once)


def model_id(model_type: Optional[str]) -> str:
    """lmms-eval's name for our model of a checkpoint ``model_type`` (None: the dispatching one)."""
    return DISPATCH_ID if model_type is None else f"seqprune_{model_type}"


def _model_type_of(path: str) -> str:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).model_type
    except Exception as e:  # not a checkpoint, offline hub id not cached, ...
        raise ModelArgsError(f"cannot read the config of pretrained={path!r}: {type(e).__name__}: {e}") from None


class SeqPruneLMM(PrunedModel, lmms):
    """lmms-eval simple model running a stock HF checkpoint under SequentialPrune (see the module docstring)."""

    MODEL_TYPE: Optional[str] = None  # set per registered class; None dispatches on the checkpoint
    FAIL_PREFIX = FAILED_MARK

    def __init__(self, batch_size=1, max_batch_size=None, device=None, **model_args):
        lmms.__init__(self)
        try:  # lmms-eval logs a model's exception and exits 0; a refused setting must stop the command
            run, folder = self._resolve(batch_size, device, model_args)
            self._set_cuda_device(device)
            self.lock = run_record.open_run(run, self.harness, folder["reuse_despite_changes"])
        except (ModelArgsError, RuntimeError) as e:
            print(f"[seqprune] error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        self._started = time.time()
        atexit.register(_at_exit, self.lock, run.run_dir, self.harness.get("output_path"), self.lmms_model_id,
                        self._started)
        try:
            self._load_pruned(run)
        except (WriteFailed, KeyboardInterrupt):
            raise
        except Exception as e:  # as above: lmms-eval would log it and exit 0, having run nothing
            print(f"[seqprune] error: {run.name}: the model could not be loaded: {type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        self.pad_id = self.processor.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.processor.tokenizer.eos_token_id
        self._restarted = set()

    def _resolve(self, batch_size, device, model_args: dict):
        """The run's ModelRun and our own model_args, checked before anything loads (ModelArgsError)."""
        setting, folder = parse_model_args(model_args)  # unknown keys fail here, first
        if str(batch_size).startswith("auto"):
            raise ModelArgsError("--batch_size auto is not supported by the seqprune models: give a number")
        self.batch_size_per_gpu = int(batch_size)
        model_type = self.MODEL_TYPE
        if model_type is None:
            if setting.model_path is None:
                raise ModelArgsError(f"--model {DISPATCH_ID} picks the family from the checkpoint: give "
                                     "pretrained=PATH_OR_HUB_ID in --model_args")
            model_type = _model_type_of(setting.model_path)
            if model_type not in BASE_BY_MODEL_TYPE:
                raise ModelArgsError(f"pretrained={setting.model_path} is a {model_type!r} checkpoint; the seqprune "
                                     f"models run {sorted(BASE_BY_MODEL_TYPE)}")
        base = BASE_BY_MODEL_TYPE[model_type]
        self.FAMILY = MODELS[base].family
        system = folder["system_prompt"]
        self.system_prompt = SYSTEM_PROMPTS.get(self.FAMILY, "") if system is None else system
        self.lmms_model_id = model_id(self.MODEL_TYPE)
        self.harness = run_record.harness_args()
        work_dir = run_record.work_dir_of(folder["work_dir"], self.harness)
        try:
            run = resolve_model(base, setting, str(work_dir), {})
        except ValueError as e:
            raise ModelArgsError(f"{self.lmms_model_id}: {e}") from None
        # the system prompt shapes the answers: part of the protocol values, so of the run's identity
        run = replace(run, protocol=run.protocol + (("system_prompt", self.system_prompt),))
        if run.model_type not in FAMILIES[self.FAMILY] or (self.MODEL_TYPE and run.model_type != self.MODEL_TYPE):
            raise ModelArgsError(f"{self.lmms_model_id} runs {self.MODEL_TYPE} checkpoints, but {run.model_path} is "
                                 f"{run.model_type!r}: use --model {DISPATCH_ID} or --model {model_id(run.model_type)}")
        return run, folder

    @staticmethod
    def _set_cuda_device(device: Optional[str]) -> None:
        """This process's GPU: its local rank's under data parallel (accelerate launch), else lmms-eval's
        --device index. A --device of another kind than the one the core runs on is refused, not ignored."""
        import os

        from SequentialPrune.evaluation.protocols import default_device

        if device is not None:
            try:
                want = torch.device(str(device))
            except RuntimeError:
                raise ModelArgsError(f"--device {device!r} is not a torch device") from None
            if want.type != default_device():
                raise ModelArgsError(f"--device {device}: the seqprune models run on {default_device()} here (CUDA "
                                     "when available); for CPU on a GPU machine set CUDA_VISIBLE_DEVICES=''")
        if torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        elif device is not None and torch.device(str(device)).index is not None:
            torch.cuda.set_device(torch.device(str(device)).index)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # -- lmms-eval's interface -------------------------------------------------------------------------------

    def loglikelihood(self, requests: List[Instance]) -> list:
        """(loss, greedy) per request, one request at a time: as lmms-eval's own models answer (its tasks take the
        lowest), the loss is the mean negative log-likelihood of the continuation's tokens. The continuation is
        scored as generation would produce it (``evaluation.continuation``): the context is pruned, ranked by its
        own last token, so the continuation never chooses the image tokens it is scored with. A failed request
        scores an infinite loss."""
        from tqdm import tqdm

        from SequentialPrune.evaluation.continuation import continuation_logprob

        self._restart_logs(requests)
        out = []
        for req in tqdm(requests, disable=self.rank != 0, desc="Model Scoring (seqprune)"):
            context, target, doc_to_visual, doc_id, task, split = req.args
            try:
                doc = self.task_dict[task][split][doc_id]
                continuation = target if isinstance(target, str) else target(doc)
                inputs = build_inputs(self.processor, self.run, self.FAMILY, context, doc_to_visual(doc),
                                      self.system_prompt)
                tokens = self.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            except Exception as e:
                self._fail(task, doc_id, "prompt", e, req)
                out.append(_scored(float("inf"), False))
                continue
            try:
                inputs = self._on_device(inputs)
                (logp, greedy), total, peak = self._measured(lambda: continuation_logprob(
                    self.model, inputs, tokens, recompute=self.prune.cache_mode == "recompute"))
            except (WriteFailed, KeyboardInterrupt):
                raise
            except Exception as e:
                self._fail(task, doc_id, "score", e, req)
                out.append(_scored(float("inf"), False))
                continue
            prefill_s, stats = self._first_prefill or (None, copy.copy(self.pruner.stats))
            out.append(_scored(-logp / len(tokens), greedy))
            if _padding(req):
                continue
            self.stats_log.write(self.stats_line(
                task, doc_id, stats.to_dict(), continuation_index=req.idx, prefill_time_s=prefill_s,
                generate_time_s=total, continuation_tokens=len(tokens), batch_peak_memory_bytes=peak))
        return out

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("the seqprune models do not run multi-round tasks (generate_until_multi_round)")

    def _restart_logs(self, requests: List[Instance]) -> None:
        """lmms-eval answers a task's requests again in full: drop an earlier launch's lines of each task once."""
        for task in dict.fromkeys(r.task_name for r in requests):
            if task not in self._restarted:
                self._restarted.add(task)
                if run_record.restart_task_logs(self.run.run_dir, task):
                    run_record.note(f"{task}: per-sample logs of an earlier launch dropped (generated again)")

    def _on_device(self, inputs: dict) -> dict:
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        for k in ("pixel_values", "pixel_values_videos"):
            if k in inputs:
                inputs[k] = inputs[k].to(self.dtype)
        return inputs

    def generate_until(self, requests: List[Instance]) -> List[str]:
        """Answers in request order; rows that share generation arguments are batched (any image counts)."""
        answers: List[Optional[str]] = [None] * len(requests)
        self._restart_logs(requests)
        from tqdm import tqdm

        pbar = tqdm(total=len(requests), disable=self.rank != 0, desc="Model Responding (seqprune)")
        step = max(1, self.batch_size) * WINDOW
        for start in range(0, len(requests), step):
            window = list(range(start, min(start + step, len(requests))))
            prepared = {}
            for i in window:
                row = self._prepare(requests[i])
                if isinstance(row, str):
                    answers[i] = row
                else:
                    prepared[i] = row
            order = list(prepared)
            for batch in sub_batches([prepared[i][1] for i in order], self.batch_size):
                idx = [order[b] for b in batch]
                for i, text in zip(idx, self._run_batch([requests[i] for i in idx], [prepared[i] for i in idx])):
                    answers[i] = text
            pbar.update(len(window))
        pbar.close()
        return answers

    # -- one request -----------------------------------------------------------------------------------------

    def _gen_kwargs(self, task_kwargs: dict) -> Tuple[dict, List[str]]:
        """The generate arguments and stop strings of a request (the task's, capped by ours)."""
        kw = dict(task_kwargs or {})
        until = kw.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        out = dict(self.generate_kwargs)
        if self.run.setting.max_new_tokens is None and kw.get("max_new_tokens"):
            out["max_new_tokens"] = int(kw["max_new_tokens"])
        temperature = float(kw.get("temperature") or 0)
        if kw.get("do_sample") or temperature > 0:  # the task asks for sampling: as lmms-eval's HF wrappers
            out.update(do_sample=True, temperature=temperature or 1.0)
            if kw.get("top_p") is not None:
                out["top_p"] = float(kw["top_p"])
        if kw.get("num_beams"):
            out["num_beams"] = int(kw["num_beams"])
        if self.prune.cache_mode == "recompute" and self.prune.prunes:
            out["use_cache"] = False
        return out, until

    def _prepare(self, req: Instance):
        """(inputs, batch key, generate kwargs, stop strings, image tokens) of a request, or its failure marker."""
        context, task_kwargs, doc_to_visual, doc_id, task, split = req.args
        try:
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            inputs = build_inputs(self.processor, self.run, self.FAMILY, context, visuals, self.system_prompt)
            kwargs, until = self._gen_kwargs(task_kwargs)
        except Exception as e:
            return self._fail(task, doc_id, "prompt", e, req)
        n_img = int(torch.isin(inputs["input_ids"], self.pruner.visual_ids.cpu()).sum())
        return inputs, json.dumps(kwargs, sort_keys=True, default=str), kwargs, until, n_img

    def _fail(self, task: str, doc_id, stage: str, e: BaseException, req: Optional[Instance] = None) -> str:
        wf = write_failure(e)
        if wf is not None:
            raise wf from None
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        if req is not None and _padding(req):  # the copy's original is recorded where it runs
            return f"{FAILED_MARK} {task} doc {doc_id}: {reason}"
        rec = dict(dataset=task, index=doc_id, stage=stage, reason=reason, model=self.model_name, logged_at=time.time())
        append_line(f"{self.run.run_dir}/{FAILURES_DIR}/{safe_name(task)}.rank{run_record.rank()}.jsonl",
                    json.dumps(rec, default=str))
        print(f"[seqprune] {task} doc {doc_id} failed ({stage}): {reason}", flush=True)
        return f"{FAILED_MARK} {task} doc {doc_id}: {reason}"

    # -- one batch -------------------------------------------------------------------------------------------

    def _run_batch(self, reqs: List[Instance], rows: List[tuple]) -> List[str]:
        try:
            return self._generate_batch(reqs, rows)
        except (WriteFailed, KeyboardInterrupt):
            raise
        except Exception as e:
            if len(rows) == 1:
                return [self._fail(reqs[0].task_name, reqs[0].doc_id, "generate", e, reqs[0])]
            # one bad row must not fail its batch: each row again alone (the same inputs as batch 1)
            return [a for r, row in zip(reqs, rows) for a in self._run_batch([r], [row])]

    def _generate_batch(self, reqs: List[Instance], rows: List[tuple]) -> List[str]:
        kwargs = rows[0][2]
        if not self._generation_recorded and run_record.rank() == 0:
            self._generation_recorded = True
            record_generation(self.run.run_dir, self._effective(kwargs))
        new_ids, stats, measured = self._generate_rows([self._on_device(r[0]) for r in rows], kwargs, self.pad_id)
        answers, lines = [], []  # written once every row is decoded: a batch retried row by row logs each once
        for req, (_, _, _, until, n_img), new, row_stats in zip(reqs, rows, new_ids, stats):
            if row_stats["n_image_tokens"] != n_img:
                raise RuntimeError(f"the pruner saw {row_stats['n_image_tokens']} image tokens, the prompt has "
                                   f"{n_img}")
            text = self.processor.tokenizer.decode(new, skip_special_tokens=True)
            for s in until:
                if s:
                    text = text.split(s)[0]
            text = text.strip()
            lines.append(self.stats_line(req.task_name, req.doc_id, row_stats, **measured, new_tokens=len(new),
                                         empty_answer=not text))
            answers.append(text)
        for req, line in zip(reqs, lines):
            if not _padding(req):
                self.stats_log.write(line)
        return answers

    def _effective(self, kwargs: dict) -> dict:
        cfg = copy.deepcopy(self.model.generation_config)
        cfg.update(**kwargs)
        out = {k: v for k, v in cfg.to_diff_dict().items() if not k.startswith("_") and k != "transformers_version"}
        return json.loads(json.dumps(out, sort_keys=True, default=str))


def _padding(req: Instance) -> bool:
    """A copy lmms-eval adds so that every rank of a data-parallel run gets as many requests (its answer is
    dropped): not a sample, so it gets no stats or failure line."""
    return bool((req.metadata or {}).get("__padding_only__"))


def _scored(loss: float, greedy: bool):
    """A loglikelihood answer as lmms-eval 0.7.3 keeps it: its evaluator turns every model output that is not a
    string or a GenerationResult into its str() (``unwrap_generation_output``), which breaks the (loss, greedy)
    pairs its multiple-choice scoring unpacks; a GenerationResult's ``text`` passes through unchanged."""
    from lmms_eval.api.instance import GenerationResult

    return GenerationResult(text=(loss, greedy))


def _at_exit(lock, run_dir, output_path, lmms_id, since) -> None:
    """After lmms-eval wrote its results: our results summary (rank 0), then the run folder is unlocked."""
    from pathlib import Path

    from .results import find_results_file, summarize

    try:
        if run_record.rank() == 0:
            f = find_results_file(output_path, lmms_id, since)
            if f is None:
                run_record.note(f"no lmms-eval results file of this launch under {output_path!r} (give --output_path"
                                f"): {run_dir}/seqprune_results.json not written")
            else:
                done = summarize(f, Path(run_dir))
                run_record.note(f"results of {', '.join(done) or 'no task'} -> {run_dir}/seqprune_results.json")
    finally:
        if run_record.rank() == 0:
            lock.release()


def _register_classes() -> Dict[str, type]:
    out = {}
    for mt in (None, *BASE_BY_MODEL_TYPE):
        name = "SeqPrune" if mt is None else "SeqPrune_" + mt
        out[model_id(mt)] = type(name, (SeqPruneLMM,), {"MODEL_TYPE": mt, "__module__": __name__,
                                                         "__doc__": f"lmms-eval model {model_id(mt)}"})
    return out


# lmms-eval model id -> class; each is also a module attribute, which is what a manifest's class path names
CLASSES = _register_classes()
globals().update({c.__name__: c for c in CLASSES.values()})
