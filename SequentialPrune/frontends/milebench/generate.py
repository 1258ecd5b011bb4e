"""The MileBench run: generate every sample once per setting, then score (``evaluate.py``'s and ``score.py``'s
rules) and write the results entries the project's tables read. ``eval/MileBench/generate.py`` runs :func:`main`.

Run folder: ``<output_dir>/<model>_<pruning tag>/`` (one per setting) with ``seqprune_setting.json`` (identity,
fingerprints, launches), ``<dataset>/pred.json`` (the original's records: ``sample_id``, ``image``, ``question``,
``gt_response``, ``gen_model_id``, ``pred_response``, ``gen_kwargs``), ``eval.json``, ``seqprune_stats/`` (per
sample: image tokens per layer, prefill FLOPs and time, ...) and ``seqprune_failures/``. Each answered sample is
appended to ``<dataset>/pred.partial.rank<R>.jsonl`` at once, so a rerun after an interruption (SIGINT, SIGKILL)
generates only the samples not saved, each once; failed samples are generated again. ``pred.json`` is written
when a dataset is complete. ``<output_dir>/execution_times.csv`` gets the original's columns (``name``,
``Elapsed Time (seconds)``): one row per dataset and launch, the seconds spent generating.

Under ``torchrun --nproc-per-node=N`` each process answers every N-th sample still to do (``dist``); rank 0 holds
the lock, prepares the folder, merges the ranks' partial files and scores.

Exit codes: 0 all good; 1 a dataset with failed samples, only empty answers, or no score; 2 refused at launch;
3 a write failed (full disk, read-only folder); 130 interrupted.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from SequentialPrune.evaluation import safe_io
from SequentialPrune.evaluation.results.answers import count_answers, failure_examples
from SequentialPrune.evaluation.results.summary import result_entry, write_results
from SequentialPrune.evaluation.rows import FAILED_MARK

from . import data as mdata
from . import dist
from .flags import MileBenchArgs
from .models import FAIL_PREFIX
from .prompts import Budget, milebench_sample

PARTIAL_GLOB = "pred.partial.rank*.jsonl"


def partial_file(ds_dir: Path, rank: int) -> Path:
    """The file rank ``rank`` appends its answers of one dataset to."""
    return Path(ds_dir) / f"pred.partial.rank{rank}.jsonl"


def partial_files(ds_dir: Path) -> List[Path]:
    return sorted(Path(ds_dir).glob(PARTIAL_GLOB))
TIMES_FILE = "execution_times.csv"
TIMES_COLUMNS = ("name", "Elapsed Time (seconds)")  # the original's generate.py


class LaunchError(RuntimeError):
    """A problem found before any model loads."""


def note(msg: str) -> None:
    """A line for the user, from rank 0 only."""
    if dist.rank() == 0:
        print(f"[seqprune] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- samples
def source_file(args: MileBenchArgs, dataset: str) -> Path:
    """The file (or folder) a dataset's samples come from."""
    if dataset == mdata.DOCVQA:
        if not args.docvqa_ann or not args.docvqa_img_dir:
            raise LaunchError("ANLS_DocVQA needs --docvqa-ann (imdb_val.npy) and --docvqa-img-dir (see README)")
        return Path(args.docvqa_ann)
    if dataset == mdata.OCRVQA:
        if not args.ocrvqa_dir:
            raise LaunchError("Rouge_OCR_VQA needs --ocrvqa-dir (the OCR-VQA datasets folder; see README)")
        return Path(args.ocrvqa_dir)
    try:
        return mdata.annotation_path(args.data_dir, dataset, args.combine_image, args.adv)
    except ValueError as e:
        raise LaunchError(str(e)) from None


def _ready(sample: mdata.Sample) -> Callable[[], mdata.Sample]:
    def build():
        return sample

    build.n_images = len(sample.images)
    return build


def sample_builders(args: MileBenchArgs, dataset: str, tokenizer) -> List[Tuple[object, Callable[[], mdata.Sample]]]:
    """(sample_id, build) per sample in the original's order; ``build`` makes its prompt (it may fail alone) and
    carries the sample's image count (``build.n_images``, the original's grouping)."""
    if dataset == mdata.DOCVQA:
        return [(s.sample_id, _ready(s)) for s in mdata.docvqa_samples(args.docvqa_ann, args.docvqa_img_dir)]
    if dataset == mdata.OCRVQA:
        return [(s.sample_id, _ready(s)) for s in mdata.ocrvqa_samples(args.ocrvqa_dir)]
    ann = mdata.load_annotation(source_file(args, dataset))
    instructions = ann["meta_data"]["task_instruction"]
    budget = Budget(args.max_context_len, args.n_tokens_per_image)
    folder = Path(args.data_dir) / dataset
    out = []
    for group in mdata.grouped(ann["data"]).values():
        for d in group:
            def build(d=d):
                return milebench_sample(d, instructions, folder, dataset, tokenizer, budget, args.combine_image)

            build.response = d.get("response")  # the record's gt_response even when the prompt cannot be built
            build.n_images = len(d["task_instance"]["images_path"])
            out.append((d["sample_id"], build))
    return out


def batches(items: List[tuple], args: MileBenchArgs) -> List[List[tuple]]:
    """``items`` ((sample_id, build) in order) cut into the samples of each generate call: ``--batch-size`` N
    consecutive ones of any image counts; ``--batch-image`` N (the original's DataLoader): consecutive ones of one
    image count, ``max(N // images, 1)`` at a time; else one at a time."""
    if args.batch_size > 1:
        return [items[i:i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    out: List[List[tuple]] = []
    for item in items:
        n = item[1].n_images
        size = max(args.batch_image // max(n, 1), 1)
        last = out[-1] if out else None
        if last is not None and last[0][1].n_images == n and len(last) < size:
            last.append(item)
        else:
            out.append([item])
    return out


def source_fingerprint(path: Path) -> dict:
    from SequentialPrune.evaluation.run_folder.fingerprint import dataset_fingerprint, directory_fingerprint

    if path.is_dir():
        files = json.dumps(directory_fingerprint(path), sort_keys=True)
        return {"tsv": str(path), "md5": hashlib.md5(files.encode()).hexdigest(), "bytes": None}
    return dataset_fingerprint(path)


# ----------------------------------------------------------------------------- pred.json and resume
def failed(rec: dict) -> bool:
    return FAILED_MARK in str(rec.get("pred_response", ""))


def _lines(path: Path):
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # cut by a crash


def newest_records(ds_dir: Path) -> Dict[str, dict]:
    """Every sample's newest record: pred.json's, then the partial files' (in the order they were appended)."""
    out: Dict[str, dict] = {}
    final = safe_io.read_json(ds_dir / "pred.json") if (ds_dir / "pred.json").is_file() else None
    for rec in final if isinstance(final, list) else []:
        out[str(rec["sample_id"])] = rec
    for part in partial_files(ds_dir):  # a sample is in one rank's file per launch; a later launch's wins
        for rec in _lines(part):
            key = str(rec["sample_id"])
            if key not in out or failed(out[key]) or not failed(rec):
                out[key] = rec
    return out


def saved_records(ds_dir: Path) -> Dict[str, dict]:
    """The samples already answered (not failed)."""
    return {k: v for k, v in newest_records(ds_dir).items() if not failed(v)}


def _times_row(output_dir: Path, name: str, seconds: float) -> None:
    path = output_dir / TIMES_FILE
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="")
    if not path.is_file():
        w.writerow(TIMES_COLUMNS)
        safe_io.append_line(path, buf.getvalue())
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="")
    w.writerow([name, seconds])
    safe_io.append_line(path, buf.getvalue())


# ----------------------------------------------------------------------------- one dataset
def generate_dataset(model, args: MileBenchArgs, run_dir: Path, dataset: str) -> Optional[List[dict]]:
    """Answer this rank's share of the samples of ``dataset`` not saved yet; on rank 0, write pred.json and return
    its records (None on the other ranks)."""
    ds_dir = run_dir / dataset
    builders = sample_builders(args, dataset, model.inputs.text_tokenizer)
    todo_ids = dist.share([str(sid) for sid, _ in builders if str(sid) not in saved_records(ds_dir)]
                          if dist.rank() == 0 else None)  # rank 0's view, so every sample has one rank
    note(f"{dataset}: {len(builders)} samples, {len(builders) - len(todo_ids)} saved, {len(todo_ids)} to generate"
         + (f" on {dist.world()} processes" if dist.world() > 1 else ""))
    mine = set(todo_ids[dist.rank()::dist.world()])
    elapsed = 0.0
    for batch in batches([(sid, build) for sid, build in builders if str(sid) in mine], args):
        t0 = time.perf_counter()
        answered = model.answer_batch(batch, dataset) if len(batch) > 1 else [model.answer(*batch[0], dataset)]
        elapsed += time.perf_counter() - t0
        for (sid, build), (sample, answer) in zip(batch, answered):
            rec = dict(sample_id=sid, image=list(map(str, sample.image_names)) if sample else [],
                       question=sample.context if sample else "",
                       gt_response=sample.response if sample else getattr(build, "response", None),
                       gen_model_id=model.model_name, pred_response=answer,
                       gen_kwargs=json.loads(json.dumps(model.generate_kwargs, default=str)))
            safe_io.append_line(partial_file(ds_dir, dist.rank()), json.dumps(rec, ensure_ascii=False))
    elapsed = dist.longest(elapsed)
    dist.barrier()  # every rank's answers are on disk
    if dist.rank() != 0:
        return None
    done = newest_records(ds_dir)
    records = [done[str(sid)] for sid, _ in builders]
    safe_io.write_text_atomic(ds_dir / "pred.json", json.dumps(records, ensure_ascii=False, indent=4))
    for part in partial_files(ds_dir):
        part.unlink()
    if todo_ids:
        _times_row(Path(args.output_dir), f"{run_dir}/{dataset}", elapsed)
    return records


def score_dataset(args: MileBenchArgs, run_dir: Path, dataset: str, records: List[dict]) -> Tuple[dict, Optional[str]]:
    """eval.json via the original's rules, and the results entry; (entry, problem line or None)."""
    from .scoring import evaluate_dataset, main_metric
    from .scoring_tables import group_of

    counts = count_answers([r["pred_response"] for r in records], [FAIL_PREFIX])
    try:
        result = evaluate_dataset(args.data_dir, dataset, run_dir, args.adv)
        metric = main_metric(dataset, result)
    except (ValueError, FileNotFoundError, AssertionError, KeyError, AttributeError, TypeError) as e:
        entry = result_entry(None, counts, problem=f"not scored: {type(e).__name__}: {e}", group=group_of(dataset))
        return entry, entry["problem"]
    # the group and the image-quantity levels, for tables per group and per level
    entry = result_entry(metric, counts, group=group_of(dataset),
                         image_quantity_levels=result.get("image_quantity_level-Accuracy"))
    return entry, entry["problem"]


# ----------------------------------------------------------------------------- launch
def _resolve(args: MileBenchArgs, setting):
    from dataclasses import replace

    from SequentialPrune.evaluation.resolve import resolve_model
    from SequentialPrune.evaluation.setting import protocol_pairs

    from .models import decoding_values

    try:
        run = resolve_model(args.base, setting, args.output_dir)
    except ValueError as e:
        raise LaunchError(f"{args.base}: {e}") from None
    if run.get("paper_tokenizer") == "checkpoint":
        from SequentialPrune.evaluation.protocols.paper_llava import metaspace_tokenizer

        if metaspace_tokenizer(run.model_path):
            note(f"WARNING: {run.model_path} ships no tokenizer.model: the prompts are cut and re-decoded, and the ids "
                 "built, with its fast tokenizer, not the original's slow one; add the LLaMA tokenizer.model "
                 "(llava-hf/llava-1.5-7b-hf ships it) to reproduce them")
    values = dict(run.options, **decoding_values(setting.max_new_tokens, args.configured_max_new_tokens),
                  max_context_len=args.max_context_len, n_tokens_per_image=args.n_tokens_per_image,
                  combine_image=args.combine_image, adv=args.adv)
    return replace(run, protocol=protocol_pairs(values))


def _prepare_folder(run, args: MileBenchArgs, sources: Dict[str, Path], argv: List[str]) -> None:
    """Refuse stale results, record the setting; drop log lines of samples generated again."""
    from SequentialPrune.evaluation.run_folder.fingerprint import checkpoint_fingerprint, code_fingerprint, dump
    from SequentialPrune.evaluation.run_folder.identity import check_not_stale, content_changes, write_setting
    from SequentialPrune.evaluation.run_folder.logs import prune_logs

    run_dir = Path(run.run_dir)
    ident = run.identity()
    try:
        check_not_stale(run_dir, ident)
    except RuntimeError as e:
        raise LaunchError(str(e)) from None
    if args.overwrite:
        for ds in args.datasets:
            for f in [run_dir / ds / "pred.json", *partial_files(run_dir / ds)]:
                f.unlink(missing_ok=True)
            prune_logs(run_dir, ds, [])
    code = code_fingerprint("milebench", "vlmevalkit")  # our pruning flags are parsed by vlmevalkit's flags.py
    content = dump({"checkpoint": checkpoint_fingerprint(run.model_path), "code": code,
                    "datasets": {ds: source_fingerprint(p) for ds, p in sources.items()}})
    with_files = {ds: [str(p) for p in [run_dir / ds / "pred.json", *partial_files(run_dir / ds)] if p.is_file()]
                  for ds in args.datasets}
    changes = content_changes(run_dir, content, with_files, any(with_files.values()))
    if changes and not args.reuse_despite_changes:
        lines = "\n  - ".join(changes)
        raise LaunchError(f"{run_dir} holds results made from other inputs than this launch's:\n  - {lines}\n"
                          "Use another --output_dir, --overwrite, or --reuse-despite-changes to keep them")
    for c in changes:
        note(f"--reuse-despite-changes: keeping the results in {run_dir} although {c}")
    write_setting(run_dir, run.name, ident, run.setting.to_dict(), args.datasets, asdict(args), dist.world(), argv,
                  content=content, accepted=changes)
    for ds in args.datasets:
        dropped = prune_logs(run_dir, ds, saved_records(run_dir / ds).keys())
        if dropped:
            note(f"{ds}: dropped {dropped} per-sample log line(s) of samples that are generated again")


def _finish(args: MileBenchArgs, run, entries: Dict[str, dict], problems: List[str]) -> int:
    run_dir = Path(run.run_dir)
    for ds, e in entries.items():
        if e["value"] is not None:
            note(f"{run.name} x {ds}: {e['metric']} = {e['value']:.4f}; {e['samples']} answers, "
                 f"{e['empty_answers']} empty, {e['failed_rows']} failed")
    # score.py's result.json / result.csv gather several settings (and result.csv is appended to, as the
    # original's is): built by score.py over the settings wanted, never here from this one setting alone
    note(f"the original's tables: python eval/MileBench/score.py --result-dir {args.output_dir} --models "
         f"{run_dir.name} [other settings]; ours: python -m SequentialPrune.frontends.milebench.summary "
         f"{args.output_dir}")
    for p in problems:
        print(f"[seqprune] {p}", file=sys.stderr)
    return 1 if problems else 0


def _launch(args: MileBenchArgs, setting, argv: List[str], locks: list):
    """Checks, the run's resolution and (rank 0) the lock and the run folder; (run, None) or (None, exit code)."""
    from SequentialPrune.evaluation.run_folder.lock import LockHeld, RunLock

    prog = Path(argv[0]).name
    try:
        sources = {ds: source_file(args, ds) for ds in args.datasets}
        missing = [str(p) for p in sources.values() if not p.exists()]
        if missing:
            raise LaunchError(f"not found: {', '.join(missing)} (see eval/MileBench/README.md for the data)")
        run = _resolve(args, setting)
        note(f"{args.base}: {run.describe()}")
        if args.dump_inputs:
            if dist.rank() == 0:
                from .dump import dump_inputs
                n = dump_inputs(run, args, Path(args.dump_inputs))
                note(f"wrote the inputs of {n} samples to {args.dump_inputs} (no model ran)")
            return None, 0
        safe_io.WRITE_ROOTS[:] = [args.output_dir]
        if dist.rank() == 0:
            lock = RunLock(Path(run.run_dir))
            lock.acquire(note)
            locks.append(lock)
            _prepare_folder(run, args, sources, argv)
        return run, None
    except (LaunchError, LockHeld) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None, 2
    except (safe_io.WriteFailed, OSError) as e:
        wf = safe_io.write_failure(e)
        if wf is None:
            raise
        print(f"{prog}: error: {wf.line()}", file=sys.stderr)
        return None, 2


def run_launch(args: MileBenchArgs, setting, argv: List[str]) -> int:
    """One launch (every rank under torchrun): the exit code (see the module)."""
    from .models import CLASSES

    locks: list = []
    dist.init()
    try:
        run, code = _launch(args, setting, argv, locks) if dist.rank() == 0 else (None, None)
        code = dist.share(code)  # a refusal on rank 0 stops every rank
        if code is not None:
            return code if dist.rank() == 0 else 0
        if run is None:
            run = _resolve(args, setting)
        try:
            model = CLASSES[run.family](run)
            entries, problems = {}, []
            for ds in args.datasets:
                records = generate_dataset(model, args, Path(run.run_dir), ds)
                if records is None:  # not rank 0: rank 0 scores
                    continue
                entry, problem = score_dataset(args, Path(run.run_dir), ds, records)
                entries[ds] = entry
                write_results(Path(run.run_dir), {ds: entry})
                if problem:
                    examples = "; ".join(failure_examples(Path(run.run_dir), ds))
                    problems.append(f"{run.name} x {ds}: {problem}" + (f" ({examples}); rerun the same command to "
                                                                       "retry only those samples" if examples else ""))
            return _finish(args, run, entries, problems) if dist.rank() == 0 else 0
        except (safe_io.WriteFailed, OSError) as e:
            wf = safe_io.write_failure(e)
            if wf is None:
                raise
            print(f"[seqprune] error: {wf.line()}", file=sys.stderr)
            return 3
        except KeyboardInterrupt:
            if dist.rank() == 0:
                print("[seqprune] interrupted: rerun the same command to resume (saved answers are kept)",
                      file=sys.stderr, flush=True)
            return 130
    finally:
        for lock in locks:
            lock.release()
        dist.finish()


def main(argv=None) -> int:
    """``eval/MileBench/generate.py``: the exit code (see the module)."""
    from .flags import parse, print_help

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    args, setting = parse(argv)
    return run_launch(args, setting, [sys.argv[0]] + argv)
