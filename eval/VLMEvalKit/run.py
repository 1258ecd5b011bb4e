#!/usr/bin/env python
"""VLMEvalKit's run loop with Sequential Prune models.

Usage is VLMEvalKit's, plus our flags (see ``flags.py`` or ``--help``)::

    python run.py --data MME OCRBench --model llava_seqprune \\
        --prune-method sequential --prune-ratio 0.75 --prune-layer 2
    torchrun --nproc-per-node=4 run.py --data DocVQA_VAL --model qwen2vl_seqprune --prune-method fastv

Steps: parse our flags and check them, and ``$LMUData`` (no model, no vlmeval
yet); import vlmeval (it narrows CUDA_VISIBLE_DEVICES per rank at import, so
before any CUDA use); parse the rest with vlmeval's own parser; check
checkpoints and datasets; register our models under names that carry the
setting; lock each run folder; refuse old results of another setting or of
other inputs (checkpoint, data, code fingerprints); call vlmeval's
``run_task`` with hooks that write each dataset's results as it finishes; then
check that every model x dataset produced results, with non-empty answers and
no failed rows.

Exit codes: 0 all good; 1 a dataset without results, with failed rows or with
only empty answers; 2 refused at launch (nothing ran); 3 a write failed
during the run (full disk, read-only folder); 130 interrupted.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

RANK = int(os.environ.get("RANK", 0))


def note(msg: str) -> None:
    if RANK == 0:
        print(f"[seqprune] {msg}", file=sys.stderr, flush=True)


class _NoEnvFileIsNotAnError(logging.Filter):
    """VLMEvalKit logs a missing .env file (optional API keys) as an ERROR at import; shown as the INFO it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith("Did not detect the .env file"):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class LaunchError(RuntimeError):
    """A problem found before any model loads."""


def _judge_configured(args) -> bool:
    return bool(args.judge or args.judge_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("LOCAL_LLM"))


def _resolve_models(args, setting, ns):
    """Our base model names in args.model (original names mapped when the original flags are used)."""
    from seqprune_models import MODELS, ORIGINAL_MODEL_NAMES, PIXEL_LIMITED

    names = list(args.model or [])
    if setting.legacy_flags:
        for i, n in enumerate(names):
            if n in ORIGINAL_MODEL_NAMES:
                note(f"--use-fast-v: model {n} runs as {ORIGINAL_MODEL_NAMES[n]} "
                     f"({MODELS[ORIGINAL_MODEL_NAMES[n]].default_path} unless --model-path)")
                names[i] = ORIGINAL_MODEL_NAMES[n]
    args.model = names
    ours = [n for n in names if n in MODELS]
    from flags import explicit_flags

    given = explicit_flags(ns)
    if not ours and given:
        raise LaunchError(f"{', '.join(given)} apply to our models ({', '.join(MODELS)}), and --model names none")
    if len(set(ours)) > 1 and setting.model_path:
        raise LaunchError("one --model-path for several of our models is ambiguous: give one NAME=PATH pair per "
                          f"model (--model-path {' '.join(f'{n}=PATH' for n in dict.fromkeys(ours))})")
    stray = [n for n, _ in setting.model_paths if n not in ours]
    if stray:
        raise LaunchError(f"--model-path names {stray}, which --model does not run (ours there: {ours})")
    if (setting.min_pixels or setting.max_pixels) and not any(MODELS[n].family in PIXEL_LIMITED for n in ours):
        raise LaunchError("--min-pixels/--max-pixels apply to Qwen models only")
    return ours


def _check_static(args, setting, ours) -> dict:
    """Check what needs no model, and resolve each of our models' own setting: its checkpoint, and the ratio
    that meets --prune-budget for its own layer and image-token counts. Returns {model name: setting}."""
    from local_datasets import dataset_known, register_local_datasets
    from seqprune_models import checkpoint_layers, protocol_of

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
    settings = {}
    for base in dict.fromkeys(ours):
        own = setting.for_model(base)
        try:
            layers, _, n_fixed = checkpoint_layers(base, own.model_path)
            if own.budget is not None:
                own = solve_budget(own, layers, n_fixed)
                note(f"--prune-budget {own.budget:g}: {base} runs {own.prune.method} at ratio "
                     f"{own.prune.ratio:g} ({own.prune.tag()})")
            own.prune.check_model(layers)
            proto = protocol_of(base, own)  # refuses e.g. --protocol paper for a model the paper did not run
            note(f"{base}: {proto['protocol']} protocol, " + ", ".join(
                f"{k} {v}" for k, v in proto.items() if k != "protocol"))
        except ValueError as e:
            raise LaunchError(f"{base}: {e}") from None
        settings[base] = own
    return settings


NOMINAL_N = 1000  # N for a fractional budget on models whose image token count varies: plans scale with N


def solve_budget(setting, num_layers: int, n_fixed):
    """The setting with the ratio that meets ``--prune-budget`` (average image tokens per layer)."""
    import dataclasses

    from SequentialPrune import PruneConfig

    b = setting.budget
    n = setting.budget_n_image or n_fixed
    if b > 1 and n is None:
        raise ValueError(f"--prune-budget {b:g} is a token count, but this model's image token count varies: "
                         "give --budget-n-image N, or a fraction of N (<= 1)")
    n = n or NOMINAL_N
    target = b if b > 1 else b * n
    fixed = {k: v for k, v in setting.prune.to_dict().items()
             if k in ("layer", "step", "scorer", "seed", "cache_mode", "score_dtype", "positions", "options")}
    if fixed.get("scorer") == setting.prune.spec.scorer:
        fixed.pop("scorer")
    if not setting.prune.schedule_obj.uses_layer:
        fixed.pop("layer", None)
    cfg = PruneConfig.for_budget(setting.prune.method, target, n, num_layers,
                                 **{k: v for k, v in fixed.items() if v is not None})
    return dataclasses.replace(setting, prune=cfg)


def _content(kw: dict, code: dict, datasets: Dict[str, dict]) -> dict:
    from fingerprint import checkpoint_fingerprint, dump
    return dump({"checkpoint": checkpoint_fingerprint(kw["model_path"]), "code": code, "datasets": datasets})


def _effective_pixels(base: str, kw: dict, setting) -> Optional[dict]:
    """Qwen: the image size bounds really used (the processor clamps requested ones); warn if clamped."""
    from pixels import effective, processor_range
    from seqprune_models import MODELS, PIXEL_LIMITED

    if MODELS[base].family not in PIXEL_LIMITED:
        return None
    sources = {k: (f"--{k.replace('_', '-')}" if getattr(setting, k) is not None else f"VLMEvalKit's default {k}")
               for k in ("min_pixels", "max_pixels")}
    eff, warns = effective(kw.get("min_pixels"), kw.get("max_pixels"), processor_range(kw["model_path"]), sources)
    for w in warns:
        note(f"warning: {w}")
    return eff


def _changes_refused(run_dir: Path, changes: List[str]) -> LaunchError:
    lines = "\n  - ".join(changes)
    return LaunchError(f"{run_dir} holds results made from other inputs than this launch's:\n  - {lines}\n"
                       "VLMEvalKit would reuse them instead of running the model. To rerun, use another --work-dir "
                       "or move that folder away; to keep them anyway (and record the new inputs), add "
                       "--reuse-despite-changes")


def _register(args, settings: dict, ns, ours, work_dir, lmudata: Path, locks: list) -> set:
    """Register our models (each with its own setting from _check_static), lock their folders, refuse stale
    results, write the setting files; rename args.model.

    Rank 0 also fingerprints the inputs, ties VLMEvalKit's image cache to the
    TSVs, takes over partial files of another process count and drops log
    lines of samples that will be generated again (see run_files.py).
    """
    from fingerprint import code_fingerprint, dataset_fingerprint, dump
    from image_cache import sync as sync_images
    from run_files import adopt_other_world_pickles, prune_logs, saved_indices
    from run_lock import RunLock
    from run_record import check_not_stale, content_changes, identity, unverifiable, write_setting
    from seqprune_models import model_kwargs, register

    world = int(os.environ.get("WORLD_SIZE", 1))
    retry_failed = not args.keep_failed
    if RANK == 0:
        code = code_fingerprint()
        data_fp = dump({ds: dataset_fingerprint(ds, lmudata / f"{ds}.tsv") for ds in args.data})
    renamed = {}
    for base in dict.fromkeys(ours):
        setting = settings[base]
        name = register(base, setting, work_dir)
        run_dir = Path(work_dir) / name
        kw = model_kwargs(base, setting, str(run_dir))
        ident = identity(kw, kw["dtype"], base)  # the dtype the protocol resolved
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
            content = _content(kw, code, data_fp)
            changes = content_changes(run_dir, name, content, args.data)
            for w in unverifiable(run_dir, content):
                note(f"warning: {w}")
            if changes and not ns.reuse_despite_changes:
                raise _changes_refused(run_dir, changes)
            for c in changes:
                note(f"--reuse-despite-changes: keeping the results in {run_dir} although {c}")
            vargs = {k: v for k, v in vars(args).items() if k not in ("key", "judge_key")}  # no secrets on disk
            vargs["model"] = [name if n == base else n for n in args.model]
            write_setting(run_dir, name, ident, setting.to_dict(), args.data, vargs, world, COMMAND_LINE,
                          content=content, effective=_effective_pixels(base, kw, setting), accepted=changes)
            for ds in args.data:
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


def _dataset_done(registered: set, work_dir: str, mode: str, run_dir: str, model: str, dataset: str) -> None:
    """Right after VLMEvalKit finishes one dataset: its results entry, and one log line per sample."""
    from results_summary import write_results
    from run_check import dataset_problems
    from run_files import one_line_per_prediction

    if model not in registered:
        return
    one_line_per_prediction(Path(run_dir), model, dataset)
    write_results(Path(run_dir), model, [dataset], dataset_problems(work_dir, model, [dataset], mode))


def _finish(args, registered: set, work_dir: str, lmudata: Path) -> int:
    """After VLMEvalKit's loop (rank 0): results, the summary, and the exit code."""
    from answer_counts import failure_examples
    from fingerprint import dataset_fingerprint, dump
    from results_summary import write_results
    from run_check import dataset_problems
    from run_files import one_line_per_prediction, remove_empty_eval_dirs
    from run_record import record_datasets

    bad, answers = [], []
    for model in args.model:
        found = dataset_problems(work_dir, model, args.data, args.mode)
        bad += [f"{model} x {d}: {why}" for d, why in found.items()]
        if model not in registered:
            continue
        run_dir = Path(work_dir) / model
        for ds in args.data:
            one_line_per_prediction(run_dir, model, ds)
        remove_empty_eval_dirs(run_dir)
        recs = write_results(run_dir, model, args.data, found)
        record_datasets(run_dir, dump({ds: dataset_fingerprint(ds, lmudata / f"{ds}.tsv") for ds in args.data}))
        for ds, rec in recs.items():
            if rec["samples"] is not None:
                note(f"{model} x {ds}: {rec['metric']} = {rec['value']}; {rec['samples']} answers, "
                     f"{rec['empty_answers']} empty, {rec['failed_rows']} failed rows")
            problem = rec.get("problem") or ""
            if ds in found or not problem:
                continue
            if problem.startswith("failed rows"):
                examples = "; ".join(failure_examples(run_dir, ds))
                answers.append(f"FAILED ROWS: {model} x {ds}: {problem} ({examples}; all in "
                               f"{run_dir / 'seqprune_failures'}). Rerun the same command to retry only those "
                               "rows; after fixing the TSV, add --reuse-despite-changes to keep the other rows")
            else:
                answers.append(f"EMPTY ANSWERS: {model} x {ds}: {problem}")
    for line in bad:
        print(f"[seqprune] NO RESULT: {line}", file=sys.stderr)
    for line in answers:
        print(f"[seqprune] {line}", file=sys.stderr)
    if not bad and not answers:
        note(f"all {len(args.model)} model(s) x {len(args.data)} dataset(s) produced results in {work_dir}")
    return 1 if bad or answers else 0


COMMAND_LINE: list = []


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    COMMAND_LINE[:] = [sys.argv[0]] + argv  # as typed, before vlmeval's parser sees only its part
    helping = "-h" in argv or "--help" in argv
    if not helping:  # first: it needs no torch import, so a wrong $LMUData fails at once
        from local_datasets import check_lmudata
        try:
            lmudata = check_lmudata()
        except ValueError as e:
            print(f"run.py: error: {e}", file=sys.stderr)
            return 2
    from flags import build_parser, explicit_flags, parse_flags

    setting, rest, ns = parse_flags(argv)
    if helping:
        build_parser().print_help()
        print("\nVLMEvalKit's flags:\n")
    import launcher_watchdog
    launcher_watchdog.start()  # torchrun workers: stop when the launcher dies
    logging.getLogger().addFilter(_NoEnvFileIsNotAnError())  # before the import that logs it
    import vlmeval.run as vrun  # noqa: E402  (reads RANK/WORLD_SIZE; may narrow CUDA_VISIBLE_DEVICES)
    from vlmeval.smp import load_env

    import io_errors
    import vlmeval_hooks
    from run_lock import LockHeld

    load_env()
    sys.argv = [sys.argv[0]] + rest
    args = vrun.parse_args()
    locks: list = []
    try:
        try:
            if args.config is not None or args.api_mode:
                if explicit_flags(ns):
                    raise LaunchError("our flags need --data/--model (not --config or --api-mode)")
                vrun.run_task(args)
                return 0
            if not args.data or not args.model:
                raise LaunchError("give --data and --model")
            ours = _resolve_models(args, setting, ns)
            settings = _check_static(args, setting, ours)
            unknown = [m for m in args.model if m not in ours and m not in vrun.supported_VLM and not args.base_url]
            if unknown:
                raise LaunchError(f"unknown model(s) {unknown}")
            if not _judge_configured(args):
                args.judge = "exact_matching"  # else each dataset retries an unreachable judge API for minutes
                note("no judge API key configured: using --judge exact_matching")
            work_dir = os.environ.get("MMEVAL_ROOT", args.work_dir)  # vlmeval gives MMEVAL_ROOT precedence
            io_errors.WRITE_ROOTS[:] = [work_dir, str(lmudata)]
            registered = _register(args, settings, ns, ours, work_dir, lmudata, locks)
        except (LaunchError, LockHeld) as e:
            print(f"run.py: error: {e}", file=sys.stderr)
            return 2
        except io_errors.WriteFailed as e:
            print(f"run.py: error: {e.line()}", file=sys.stderr)
            return 2
        except OSError as e:
            if not io_errors.is_write_error(e):
                raise
            print(f"run.py: error: {io_errors.WriteFailed(e.filename, e).line()}", file=sys.stderr)
            return 2
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            from dist_fallback import install_gloo_fallback
            install_gloo_fallback()
        vlmeval_hooks.install(vrun, functools.partial(_dataset_done, registered, work_dir, args.mode),
                              mark_empty_questions=set(args.model) <= registered)
        try:
            vrun.run_task(args)
        except io_errors.WriteFailed as e:
            print(f"[seqprune] error: {e.line()}", file=sys.stderr, flush=True)
            return 3
        except OSError as e:
            if not io_errors.is_write_error(e):
                raise
            print(f"[seqprune] error: {io_errors.WriteFailed(e.filename, e).line()}", file=sys.stderr, flush=True)
            return 3
        except KeyboardInterrupt:
            print("[seqprune] interrupted: rerun the same command to resume (saved predictions are kept)",
                  file=sys.stderr, flush=True)
            return 130
        if RANK != 0:
            return 0
        try:
            return _finish(args, registered, work_dir, lmudata)
        except io_errors.WriteFailed as e:
            print(f"[seqprune] error: {e.line()}", file=sys.stderr, flush=True)
            return 3
    finally:
        for lock in locks:
            lock.release()


if __name__ == "__main__":
    sys.exit(main())
