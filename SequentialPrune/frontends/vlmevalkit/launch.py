"""Before VLMEvalKit's loop: resolve each of our models once, register it, lock its run folder, refuse stale
results, and write its setting record.

Each model's :class:`~SequentialPrune.evaluation.setting.ModelRun` is resolved
here, once (checkpoint, budget-solved pruning config, protocol values), and the
same object goes to the registry, the run identity and the setting record.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

from SequentialPrune.evaluation import catalog
from SequentialPrune.evaluation.protocols import PIXEL_FAMILIES
from SequentialPrune.evaluation.run_folder.fingerprint import checkpoint_fingerprint, code_fingerprint, dump
from SequentialPrune.evaluation.run_folder.identity import (check_not_stale, content_changes, unverifiable,
                                                            write_setting)
from SequentialPrune.evaluation.run_folder.lock import RunLock
from SequentialPrune.evaluation.setting import EvalSetting, ModelRun

from .datasets import dataset_fingerprint

RANK = int(os.environ.get("RANK", 0))


def note(msg: str) -> None:
    """A line for the user, from rank 0 only."""
    if RANK == 0:
        print(f"[seqprune] {msg}", file=sys.stderr, flush=True)


class LaunchError(RuntimeError):
    """A problem found before any model loads."""


def resolve_names(args, setting: EvalSetting, ns) -> List[str]:
    """Our base model names in args.model (original names mapped when the original flags are used)."""
    from .flags import explicit_flags
    from .models import ORIGINAL_MODEL_NAMES

    models = catalog.MODELS
    names = list(args.model or [])
    if setting.legacy_flags:
        for i, n in enumerate(names):
            if n in ORIGINAL_MODEL_NAMES:
                note(f"--use-fast-v: model {n} runs as {ORIGINAL_MODEL_NAMES[n]} "
                     f"({models[ORIGINAL_MODEL_NAMES[n]].default_path} unless --model-path)")
                names[i] = ORIGINAL_MODEL_NAMES[n]
    args.model = names
    ours = [n for n in names if n in models]
    given = explicit_flags(ns)
    if not ours and given:
        raise LaunchError(f"{', '.join(given)} apply to our models ({', '.join(models)}), and --model names none")
    if len(set(ours)) > 1 and setting.model_path:
        raise LaunchError("one --model-path for several of our models is ambiguous: give one NAME=PATH pair per "
                          f"model (--model-path {' '.join(f'{n}=PATH' for n in dict.fromkeys(ours))})")
    stray = [n for n, _ in setting.model_paths if n not in ours]
    if stray:
        raise LaunchError(f"--model-path names {stray}, which --model does not run (ours there: {ours})")
    if (setting.min_pixels or setting.max_pixels) and not any(models[n].family in PIXEL_FAMILIES for n in ours):
        raise LaunchError("--min-pixels/--max-pixels apply to Qwen models only")
    return ours


def check_static(args, setting: EvalSetting, ours: List[str], work_dir: str) -> Dict[str, ModelRun]:
    """Check what needs no model, and resolve each of our models once: its checkpoint, and the ratio that meets
    --prune-budget for its own layer and image-token counts. Returns {model name: ModelRun}."""
    from . import image_cells
    from .datasets import answer_check, dataset_known, duplicated_indices, lmudata_root, register_local_datasets
    from .models import resolve

    if setting.attn_impl == "flash_attention_2":
        import torch
        if not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None:
            raise LaunchError("--attn-impl flash_attention_2 needs CUDA and the flash-attn package; use sdpa")
    try:
        register_local_datasets(setting.register_datasets)
    except FileNotFoundError as e:
        raise LaunchError(str(e)) from None
    unknown = [d for d in args.data if not dataset_known(d)]
    if unknown:
        raise LaunchError(f"unknown dataset(s) {unknown}: not a VLMEvalKit name and no $LMUData/<name>.tsv")
    for d in args.data:
        tsv = lmudata_root() / f"{d}.tsv"
        dup = duplicated_indices(tsv) if tsv.is_file() else []
        if dup:
            raise LaunchError(f"{tsv}: several rows share the index {', '.join(dup)}; VLMEvalKit keys each row's "
                              "answer and image by its index, so they would be answered about one image and "
                              "scored with one answer. Give every row its own index")
        cells = image_cells.tsv_problems(tsv) if tsv.is_file() else {}
        if cells:
            rows = ", ".join(list(cells)[:10]) + (" ..." if len(cells) > 10 else "")
            first = next(iter(cells.values()))
            if set(args.model) - set(ours):
                raise LaunchError(f"{tsv}: rows {rows}: {first}. VLMEvalKit stops the whole dataset on such a "
                                  "cell; fix the cells (or run only our models, which fail those rows alone)")
            note(f"warning: {tsv}: {len(cells)} row(s) ({rows}) will fail alone: {first}")
    for name, kind in setting.register_datasets:
        if name not in args.data:
            continue
        error, warning = answer_check(lmudata_root() / f"{name}.tsv", kind)
        if error and args.mode != "infer":
            raise LaunchError(error)
        if warning:
            note(f"warning: {warning}")
    runs = {}
    for base in dict.fromkeys(ours):
        try:  # resolve refuses e.g. --protocol paper for a model the paper did not run
            run = resolve(base, setting, work_dir)
        except ValueError as e:
            raise LaunchError(f"{base}: {e}") from None
        if setting.budget is not None:
            note(f"--prune-budget {setting.budget:g}: {base} runs {run.prune.method} at ratio "
                 f"{run.prune.ratio:g} ({run.prune.tag()})")
        note(f"{base}: {run.describe()}")
        _warn_paper_tokenizer(run)
        runs[base] = run
    return runs


def _warn_paper_tokenizer(run: ModelRun) -> None:
    """Loud, at launch: the paper protocol's LLaVA ids need the checkpoint's SentencePiece model."""
    from SequentialPrune.evaluation.protocols.paper_llava import metaspace_tokenizer

    if run.get("paper_tokenizer") == "checkpoint" and metaspace_tokenizer(run.model_path):
        where = (Path(run.model_path) / "tokenizer.model" if Path(run.model_path).is_dir()
                 else f"tokenizer.model in {run.model_path}")
        note(f"WARNING: {run.base}: {run.model_path} ships no tokenizer.model, so the paper protocol tokenises "
             "with the checkpoint's fast tokenizer, which drops the '▁' after each image: the token ids differ "
             f"from the original's. Add the LLaMA SentencePiece model as {where} (llava-hf/llava-1.5-7b-hf ships "
             "it) to reproduce them")


def _effective_pixels(run: ModelRun) -> Optional[dict]:
    """Qwen: the image size bounds really used (the processor clamps requested ones); warn if clamped."""
    from SequentialPrune.evaluation.protocols.qwen_pixels import effective, processor_range

    if run.family not in PIXEL_FAMILIES:
        return None
    sources = {k: (f"--{k.replace('_', '-')}" if getattr(run.setting, k) is not None else f"VLMEvalKit's default {k}")
               for k in ("min_pixels", "max_pixels")}
    eff, warns = effective(run.get("min_pixels"), run.get("max_pixels"), processor_range(run.model_path), sources)
    for w in warns:
        note(f"warning: {w}")
    return eff


def _changes_refused(run_dir: Path, changes: List[str]) -> LaunchError:
    lines = "\n  - ".join(changes)
    return LaunchError(f"{run_dir} holds results made from other inputs than this launch's:\n  - {lines}\n"
                       "VLMEvalKit would reuse them instead of running the model. To rerun, use another --work-dir "
                       "or move that folder away; to keep them anyway (and record the new inputs), add "
                       "--reuse-despite-changes")


def datasets_fingerprint(lmudata: Path, datasets: List[str]) -> dict:
    return dump({ds: dataset_fingerprint(ds, lmudata / f"{ds}.tsv") for ds in datasets})


def register_runs(args, runs: Dict[str, ModelRun], ns, lmudata: Path, locks: list, command_line: List[str]) -> set:
    """Register our models, lock their folders, refuse stale results, write the setting files; rename
    args.model to the registered names.

    Rank 0 also fingerprints the inputs, ties VLMEvalKit's image cache to the
    TSVs, takes over partial files of another process count and drops log
    lines of samples that will be generated again (see run_files.py).
    """
    from SequentialPrune.evaluation.run_folder.logs import prune_logs

    from .image_cache import sync as sync_images
    from .models import register
    from .run_files import adopt_other_world_pickles, any_results, dataset_files, saved_indices, set_aside_broken

    world = int(os.environ.get("WORLD_SIZE", 1))
    retry_failed = not args.keep_failed
    if RANK == 0:
        code = code_fingerprint("vlmevalkit")
        data_fp = datasets_fingerprint(lmudata, args.data)
    renamed = {}
    for base, run in runs.items():
        name = register(run)
        run_dir = Path(run.run_dir)
        ident = run.identity()
        lock = RunLock(run_dir)
        if RANK == 0:
            lock.acquire(note)
            locks.append(lock)
        else:
            lock.wait_for_job()
        try:  # every rank checks (read-only), so all of them stop, not only rank 0
            check_not_stale(run_dir, ident)
        except RuntimeError as e:
            raise LaunchError(str(e)) from None
        if RANK == 0:
            content = dump({"checkpoint": checkpoint_fingerprint(run.model_path), "code": code, "datasets": data_fp})
            with_files = {ds: dataset_files(run_dir, name, ds) for ds in args.data}
            changes = content_changes(run_dir, content, with_files, any_results(run_dir, name))
            for w in unverifiable(run_dir, content):
                note(f"warning: {w}")
            if changes and not ns.reuse_despite_changes:
                raise _changes_refused(run_dir, changes)
            for c in changes:
                note(f"--reuse-despite-changes: keeping the results in {run_dir} although {c}")
            vargs = {k: v for k, v in vars(args).items() if k not in ("key", "judge_key")}  # no secrets on disk
            vargs["model"] = [name if n == base else n for n in args.model]
            write_setting(run_dir, name, ident, run.setting.to_dict(), args.data, vargs, world, command_line,
                          content=content, effective=_effective_pixels(run), accepted=changes)
            for ds in args.data:
                for line in set_aside_broken(run_dir, name, ds):
                    note(line)
                took = adopt_other_world_pickles(run_dir, name, ds, world, retry_failed)
                if took:
                    note(took)
                if args.mode != "eval":
                    dropped = prune_logs(run_dir, ds, saved_indices(run_dir, name, ds, world, retry_failed))
                    if dropped:
                        note(f"{ds}: dropped {dropped} per-sample log line(s) of samples that are generated again "
                             "(not saved before the last interruption)")
        note(f"{base} -> {name} (results in {run_dir})")
        renamed[base] = name
    if RANK == 0 and renamed:
        for ds in args.data:
            msg = sync_images(lmudata, ds, lmudata / f"{ds}.tsv", data_fp[ds].get("md5"))
            if msg:
                note(msg)
    args.model = [renamed.get(n, n) for n in args.model]
    return set(renamed.values())
