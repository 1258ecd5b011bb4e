"""The run folder of one of our models under lmms-eval: lock, stale-setting guard, fingerprints, setting record,
and per-task logs that start afresh when lmms-eval generates a task again.

lmms-eval writes its own results (``--output_path``); beside them, our folder
``<work dir>/<model name with pruning tag>/`` holds what lmms-eval leaves to the
user: ``seqprune_setting.json`` (identity, fingerprints of checkpoint and code,
each launch's command), ``seqprune_stats/`` and ``seqprune_failures/`` (one line
per sample), and ``seqprune_results.json`` (``results.py``).
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import List, Optional

from SequentialPrune.evaluation.run_folder import identity as record
from SequentialPrune.evaluation.run_folder.fingerprint import checkpoint_fingerprint, code_fingerprint, dump
from SequentialPrune.evaluation.run_folder.lock import RunLock
from SequentialPrune.evaluation.run_folder.logs import LOG_DIRS, safe_name
from SequentialPrune.evaluation.setting import ModelRun

DEFAULT_WORK_DIR = "seqprune_lmms_eval"


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def note(msg: str) -> None:
    """A line for the user, from rank 0 only."""
    if rank() == 0:
        print(f"[seqprune] {msg}", file=sys.stderr, flush=True)


def harness_args(argv: Optional[List[str]] = None) -> dict:
    """The lmms-eval arguments our record keeps (read from the command line, which lmms-eval does not hand to
    a model): output path, tasks, batch size, limit."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--output_path", "--tasks", "--batch_size", "--limit", "--model", "--model_args"):
        p.add_argument(flag, default=None)
    a, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    out = {k: v for k, v in vars(a).items()}
    try:
        out["lmms_eval_version"] = metadata.version("lmms_eval")
    except metadata.PackageNotFoundError:
        out["lmms_eval_version"] = None
    return out


def work_dir_of(given: Optional[str], args: dict) -> Path:
    """model_args work_dir, else lmms-eval's --output_path (its folder if it names a file), else the default."""
    if given:
        return Path(given)
    out = args.get("output_path")
    if out:
        p = Path(out)
        return p.parent if p.suffix in (".json", ".jsonl") else p
    return Path(DEFAULT_WORK_DIR)


def open_run(run: ModelRun, args: dict, reuse_despite_changes: bool) -> RunLock:
    """Lock ``run``'s folder, refuse another setting's or changed inputs' stats, write the setting record."""
    run_dir = Path(run.run_dir)
    lock = RunLock(run_dir)
    if rank() == 0:
        lock.acquire(note)
    else:
        lock.wait_for_job()
    ident = run.identity()
    try:
        record.check_not_stale(run_dir, ident)
        if rank() != 0:
            return lock
        content = dump({"checkpoint": checkpoint_fingerprint(run.model_path), "code": code_fingerprint("lmms_eval"),
                        "datasets": {}})
        changes = record.content_changes(run_dir, content, {}, record.any_logs(run_dir))
        for w in record.unverifiable(run_dir, content):
            note(f"warning: {w}")
        if changes and not reuse_despite_changes:
            lines = "\n  - ".join(changes)
            raise RuntimeError(f"{run_dir} holds per-sample stats made from other inputs than this launch's:\n"
                               f"  - {lines}\nuse another --output_path (or model_args work_dir), move that folder "
                               "away, or add reuse_despite_changes=true to --model_args")
        tasks = [t for t in (args.get("tasks") or "").split(",") if t]
        record.write_setting(run_dir, run.name, ident, run.setting.to_dict(), tasks, args, world(), sys.argv,
                      content=content, accepted=changes)
    except BaseException:
        if rank() == 0:
            lock.release()
        raise
    note(f"{run.name}: {run.model_path} ({run.describe()}); per-sample stats in {run_dir}")
    return lock


def restart_task_logs(run_dir, task: str) -> int:
    """Drop this rank's per-sample lines of ``task`` (lmms-eval generates the whole task again), and on rank 0
    those of ranks this launch does not have; return the files removed."""
    removed = 0
    for sub in LOG_DIRS:
        for f in (Path(run_dir) / sub).glob(f"{safe_name(task)}.rank*.jsonl"):
            r = f.name[len(safe_name(task)) + len(".rank"):-len(".jsonl")]
            if r == str(rank()) or (rank() == 0 and r.isdigit() and int(r) >= world()):
                f.unlink()
                removed += 1
    return removed
