"""Hooks into VLMEvalKit's run loop (``vlmeval.run``), installed by ``run.py`` before ``run_task``.

* After each dataset VLMEvalKit records as done (scored, skipped or failed),
  ``on_done(run_dir, model, dataset)`` runs, so results are written as each
  dataset finishes rather than once at the end.
* Inference, status writes and evaluation run under ``safe_io.guard``: a
  full disk or read-only folder stops the run with one line instead of
  VLMEvalKit logging a traceback per dataset and going on.
* VLMEvalKit's prediction writes (the partial ``.pkl`` every few samples, the
  final ``.xlsx``) go through a temporary file and a rename (:func:`atomic_dump`),
  so a kill mid-write leaves the previous file whole instead of a cut one that
  every later resume would trust.
* Each dataset's ``evaluate`` records which judge really scored it (``judges``): VLMEvalKit falls back to
  exact matching, with only a warning, when the configured judge does not answer.
* Image cells VLMEvalKit would stop the dataset on (a file path, a short junk cell) are marked as the
  dataset loads (``image_cells``), so the row fails alone with the reason.
* Blank questions of each built dataset are marked (``rows.mark_empty_questions``), so the
  row fails alone instead of VLMEvalKit's MCQ scoring failing the dataset.

The names are replaced in ``vlmeval.run``'s namespace, which is where
``run_local_mode`` looks them up.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable

from SequentialPrune.evaluation.rows import mark_empty_questions as mark
from SequentialPrune.evaluation.safe_io import guard, replacing

from . import image_cells
from .judges import recording_judge


# The modules whose `dump` writes predictions (the image, video and multi-turn inference loops).
INFERENCE_MODULES = ("vlmeval.inference", "vlmeval.inference_video", "vlmeval.inference_mt")


def atomic_dump(dump: Callable) -> Callable:
    """VLMEvalKit's ``dump(data, path)`` through a temporary file and a rename (``safe_io.replacing``)."""
    if getattr(dump, "_seqprune_atomic", False):
        return dump

    def wrapper(data, f, *args, **kwargs):
        with replacing(f) as tmp:  # same extension: dump picks the format by it
            dump(data, tmp, *args, **kwargs)

    wrapper._seqprune_atomic = True
    return wrapper


def install(vrun, on_done: Callable[[str, str, str], None], rows_fail_alone: bool = True) -> None:
    """Install the hooks. ``rows_fail_alone`` (blank questions and unusable image cells marked) only when every
    model of the launch is ours: only our models turn the markers into row failures."""

    if getattr(vrun, "_seqprune_hooks", False):
        return
    # A full disk also fails VLMEvalKit's log file; logging would print a traceback per message.
    logging.raiseExceptions = False

    upsert = guard(vrun.upsert_dataset_status)

    def upsert_dataset_status(*args, **kwargs):
        out = upsert(*args, **kwargs)
        if kwargs.get("status") == "done" or kwargs.get("error_message"):
            run_dir = kwargs.get("run_dir", args[0] if args else None)
            try:
                on_done(str(run_dir), kwargs.get("model_name"), kwargs.get("dataset_name"))
            except Exception as e:  # a bug in our bookkeeping must not cost the run; the end-of-run pass retries
                print(f"[seqprune] warning: could not record the results of {kwargs.get('dataset_name')} yet: "
                      f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return out

    build = vrun.build_dataset

    def build_dataset(*args, **kwargs):
        ds = build(*args, **kwargs)
        if ds is not None and hasattr(ds, "evaluate"):
            ds.evaluate = recording_judge(guard(ds.evaluate), getattr(ds, "dataset_name", None)
                                          or (args[0] if args else kwargs.get("dataset")))
        if ds is not None and rows_fail_alone:
            mark(getattr(ds, "data", None))
        return ds

    vrun.upsert_dataset_status = upsert_dataset_status
    vrun.upsert_run_status = guard(vrun.upsert_run_status)
    vrun.infer_data_job = guard(vrun.infer_data_job)
    vrun.build_dataset = build_dataset
    if rows_fail_alone:
        image_cells.install()
    for name in INFERENCE_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "dump"):
            module.dump = atomic_dump(module.dump)
    vrun._seqprune_hooks = True
