"""VLMEvalKit's files of one dataset in a run folder, and keeping them consistent across resumes.

VLMEvalKit saves predictions per process in ``{rank}{world}_{dataset}.pkl``
(every 10 samples) and, once a dataset is done, in ``<model>_<dataset>.xlsx``.
A rerun reads only the pickles of its own world size and regenerates every
sample not saved. This module

* takes over the pickles of another world size (an interrupted 2-process run
  rerun with 1 process), so their samples are not redone and no orphan files
  stay behind (:func:`adopt_other_world_pickles`);
* computes which samples a launch will *not* regenerate (:func:`saved_indices`);
* drops per-sample log lines (stats, failed rows) of every other sample, and
  duplicate lines, so that after any resume each sample has exactly one line
  (:func:`prune_logs`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Set

from SequentialPrune.evaluation.run_folder.logs import log_files, prune_logs

# VLMEvalKit's inference retries predictions holding this (vlmeval.inference.FAIL_MSG).
RETRIED_FAIL_MSG = "Failed to obtain answer via API."


def _pickle_pattern(dataset: str):
    return re.compile(rf"^(\d+)_{re.escape(dataset)}\.pkl$")


def rank_pickles(run_dir: Path, dataset: str) -> List[Path]:
    """Every ``{rank}{world}_{dataset}.pkl`` in the folder, whatever the world size."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    pat = _pickle_pattern(dataset)
    return sorted(p for p in run_dir.iterdir() if pat.match(p.name))


def prediction_file(run_dir: Path, model: str, dataset: str) -> Path:
    from vlmeval.smp import get_pred_file_path
    return Path(get_pred_file_path(str(run_dir), model, dataset, use_env_format=True))


def dataset_files(run_dir: Path, model: str, dataset: str) -> List[Path]:
    """Files in the folder that hold results of ``dataset`` (predictions, evaluation, partial work, logs)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_file() and (p.name.startswith(f"{model}_{dataset}.") or
                                                             p.name.startswith(f"{model}_{dataset}_"))]
    return sorted(found) + rank_pickles(run_dir, dataset) + log_files(run_dir, dataset)


def any_results(run_dir: Path, model: str) -> bool:
    """Whether the folder holds predictions or partial predictions of any dataset."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(p.name.startswith(f"{model}_") or p.suffix == ".pkl" for p in run_dir.iterdir())


def load_predictions(path: Path) -> Dict[str, object]:
    """{str(index): prediction} of a prediction table or a rank pickle ({} if unreadable)."""
    from vlmeval.smp import load

    try:
        data = load(str(path))
    except Exception:  # a pickle cut by a kill: nothing usable in it
        return {}
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items()}
    if hasattr(data, "columns") and "index" in data.columns and "prediction" in data.columns:
        return {str(k): v for k, v in zip(data["index"], data["prediction"])}
    return {}


def _failed(pred) -> bool:
    return RETRIED_FAIL_MSG in str(pred)


def adopt_other_world_pickles(run_dir: Path, model: str, dataset: str, world: int,
                              retry_failed: bool = True) -> Optional[str]:
    """Merge rank pickles of another world size into this launch's ones; return a note (None: nothing found).

    VLMEvalKit would ignore them (and leave them behind): their samples would be
    generated again. Failed predictions are dropped when failures are retried,
    as VLMEvalKit does for a finished prediction file.
    """
    from vlmeval.smp import dump, load

    run_dir = Path(run_dir)
    mine = {f"{r}{world}_{dataset}.pkl" for r in range(world)}
    others = [p for p in rank_pickles(run_dir, dataset) if p.name not in mine]
    if not others:
        return None
    merged = {}
    for p in others:
        try:
            part = load(str(p))
        except Exception:
            part = {}
        if isinstance(part, dict):
            merged.update(part)
    if retry_failed:
        merged = {k: v for k, v in merged.items() if not _failed(v)}
    if merged:
        for r in range(world):
            target = run_dir / f"{r}{world}_{dataset}.pkl"
            current = load(str(target)) if target.is_file() else {}
            tmp = target.with_name(target.name + ".tmp.pkl")
            dump({**merged, **(current if isinstance(current, dict) else {})}, str(tmp))
            os.replace(tmp, target)
    for p in others:
        p.unlink()
    return (f"{dataset}: took over {len(merged)} saved prediction(s) from an interrupted run with another "
            f"process count ({', '.join(p.name for p in others)}); those samples are not generated again "
            "and the files were removed")


def saved_indices(run_dir: Path, model: str, dataset: str, world: int, retry_failed: bool = True) -> Set[str]:
    """Indices (as str) whose predictions this launch keeps; VLMEvalKit regenerates every other sample."""
    run_dir = Path(run_dir)
    saved: Dict[str, object] = {}
    pred = prediction_file(run_dir, model, dataset)
    if pred.is_file():
        saved = load_predictions(pred)
        if retry_failed:
            saved = {k: v for k, v in saved.items() if not _failed(v)}
    for r in range(world):  # VLMEvalKit keeps its own pickles' entries as they are
        p = run_dir / f"{r}{world}_{dataset}.pkl"
        if p.is_file():
            saved.update(load_predictions(p))
    return set(saved)


def remove_empty_eval_dirs(run_dir: Path) -> None:
    """Remove the empty ``T<date>-<time>`` folders VLMEvalKit makes at every launch (used only with --reuse)."""
    for p in Path(run_dir).glob("T*-*"):
        if p.is_dir() and re.fullmatch(r"T\d{8}-\d{6}", p.name):
            try:
                p.rmdir()  # only if empty
            except OSError:
                pass


def one_line_per_prediction(run_dir: Path, model: str, dataset: str) -> int:
    """After a dataset is done: one log line per predicted sample (duplicates dropped, the newest kept)."""
    pred = prediction_file(run_dir, model, dataset)
    return prune_logs(run_dir, dataset, load_predictions(pred)) if pred.is_file() else 0


def _loads(path: Path) -> bool:
    from vlmeval.smp import load

    try:
        load(str(path))
        return True
    except Exception:  # 0 bytes, cut short by a kill, not the format its name says
        return False


def set_aside_broken(run_dir: Path, model: str, dataset: str) -> List[str]:
    """Rename prediction files of ``dataset`` that cannot be read (the final table, the previous-run and rank
    pickles) to ``<name>.broken-<time>``; return a line per file. VLMEvalKit would trust such a file on every
    resume and fail on it; without it, the rows it held are generated again, the others kept."""
    import time

    run_dir = Path(run_dir)
    candidates = [prediction_file(run_dir, model, dataset), run_dir / f"{model}_{dataset}_PREV.pkl",
                  *rank_pickles(run_dir, dataset)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = []
    for path in candidates:
        if path.is_file() and not _loads(path):
            size, aside = path.stat().st_size, path.with_name(f"{path.name}.broken-{stamp}")
            os.replace(path, aside)
            out.append(f"{dataset}: {path} cannot be read ({size} bytes; cut short by a kill?); set aside as "
                       f"{aside.name}, its rows are generated again")
    return out
