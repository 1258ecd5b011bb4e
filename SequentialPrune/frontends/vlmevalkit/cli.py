"""VLMEvalKit's run loop with Sequential Prune models: the command ``eval/VLMEvalKit/run.py`` runs.

Usage is VLMEvalKit's, plus our flags (see ``flags`` or ``--help``)::

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
import logging
import os
import sys
from pathlib import Path

from SequentialPrune.evaluation import safe_io

# .launch (and through it torch and transformers) is imported after the $LMUData check, so that a wrong
# $LMUData fails at once.


class _NoEnvFileIsNotAnError(logging.Filter):
    """VLMEvalKit logs a missing .env file (optional API keys) as an ERROR at import; shown as the INFO it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith("Did not detect the .env file"):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _judge_configured(args) -> bool:
    return bool(args.judge or args.judge_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("LOCAL_LLM"))


def _dataset_done(registered: set, work_dir: str, mode: str, run_dir: str, model: str, dataset: str) -> None:
    """Right after VLMEvalKit finishes one dataset: its results entry, and one log line per sample."""
    from .results import dataset_problems, write_dataset_results
    from .run_files import one_line_per_prediction

    if model not in registered:
        return
    one_line_per_prediction(Path(run_dir), model, dataset)
    write_dataset_results(Path(run_dir), model, [dataset], dataset_problems(work_dir, model, [dataset], mode))


def _finish(args, registered: set, work_dir: str, lmudata: Path) -> int:
    """After VLMEvalKit's loop (rank 0): results, the summary, and the exit code."""
    from SequentialPrune.evaluation.results.answers import failure_examples
    from SequentialPrune.evaluation.run_folder.identity import record_datasets

    from .launch import datasets_fingerprint, note
    from .results import dataset_problems, write_dataset_results
    from .run_files import one_line_per_prediction, remove_empty_eval_dirs

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
        recs = write_dataset_results(run_dir, model, args.data, found)
        record_datasets(run_dir, datasets_fingerprint(lmudata, args.data))
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


def _early_work_dir(rest) -> str:
    """The work dir vlmeval will use (``$MMEVAL_ROOT`` first, as vlmeval does, else ``--work-dir``, else its
    default ``./outputs``), read from the command line before vlmeval is imported; main() checks the one vlmeval
    parsed again (it also takes abbreviations)."""
    import argparse

    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--work-dir", default="./outputs")
    return os.environ.get("MMEVAL_ROOT", p.parse_known_args(rest)[0].work_dir)


def _check_work_dir(work_dir: str) -> None:
    """The work dir, or the nearest existing folder above it, must be a folder."""
    from .launch import LaunchError

    path = Path(work_dir).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise LaunchError(f"--work-dir {work_dir}: {path} is a file, not a folder; choose another --work-dir")


def _write_error(e: BaseException, prefix: str) -> bool:
    """Print a write failure's one line; False if ``e`` is not one (the caller re-raises)."""
    wf = safe_io.write_failure(e)
    if wf is None:
        return False
    print(f"{prefix}{wf.line()}", file=sys.stderr, flush=True)
    return True


def main(argv=None) -> int:
    """``eval/VLMEvalKit/run.py``: our flags, then VLMEvalKit's loop; the exit code (see the module)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command_line = [sys.argv[0]] + argv  # as typed, before vlmeval's parser sees only its part
    helping = "-h" in argv or "--help" in argv
    if not helping:  # first: it needs no torch import, so a wrong $LMUData fails at once
        from .datasets import check_lmudata
        try:
            lmudata = check_lmudata()
        except ValueError as e:
            print(f"run.py: error: {e}", file=sys.stderr)
            return 2
    from .flags import build_parser, explicit_flags, parse_flags
    from .launch import RANK, LaunchError, check_static, note, register_runs, resolve_names

    setting, rest, ns = parse_flags(argv)
    if not helping:  # a work dir that cannot be one fails before the ~10 s import of vlmeval
        try:
            _check_work_dir(_early_work_dir(rest))
        except LaunchError as e:
            print(f"run.py: error: {e}", file=sys.stderr)
            return 2
    if helping:
        build_parser().print_help()
        print("\nVLMEvalKit's flags:\n")
    from . import launcher_watchdog
    launcher_watchdog.start()  # torchrun workers: stop when the launcher dies
    logging.getLogger().addFilter(_NoEnvFileIsNotAnError())  # before the import that logs it
    import vlmeval.run as vrun  # noqa: E402  (reads RANK/WORLD_SIZE; may narrow CUDA_VISIBLE_DEVICES)
    from vlmeval.smp import load_env

    from SequentialPrune.evaluation.run_folder.lock import LockHeld

    from . import hooks

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
            work_dir = os.environ.get("MMEVAL_ROOT", args.work_dir)  # vlmeval gives MMEVAL_ROOT precedence
            _check_work_dir(work_dir)
            ours = resolve_names(args, setting, ns)
            runs = check_static(args, setting, ours, work_dir)
            unknown = [m for m in args.model if m not in ours and m not in vrun.supported_VLM and not args.base_url]
            if unknown:
                raise LaunchError(f"unknown model(s) {unknown}")
            if not _judge_configured(args):
                args.judge = "exact_matching"  # else each dataset retries an unreachable judge API for minutes
                note("no judge API key configured: using --judge exact_matching")
            safe_io.WRITE_ROOTS[:] = [work_dir, str(lmudata)]
            registered = register_runs(args, runs, ns, lmudata, locks, command_line)
        except (LaunchError, LockHeld) as e:
            print(f"run.py: error: {e}", file=sys.stderr)
            return 2
        except (safe_io.WriteFailed, OSError) as e:
            if not _write_error(e, "run.py: error: "):
                raise
            return 2
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            from .dist_fallback import install_gloo_fallback
            install_gloo_fallback()
        hooks.install(vrun, functools.partial(_dataset_done, registered, work_dir, args.mode),
                      rows_fail_alone=set(args.model) <= registered)
        try:
            vrun.run_task(args)
        except (safe_io.WriteFailed, OSError) as e:
            if not _write_error(e, "[seqprune] error: "):
                raise
            return 3
        except KeyboardInterrupt:
            print("[seqprune] interrupted: rerun the same command to resume (saved predictions are kept)",
                  file=sys.stderr, flush=True)
            return 130
        if RANK != 0:
            return 0
        try:
            return _finish(args, registered, work_dir, lmudata)
        except safe_io.WriteFailed as e:
            _write_error(e, "[seqprune] error: ")
            return 3
    finally:
        for lock in locks:
            lock.release()
