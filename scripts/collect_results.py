#!/usr/bin/env python
"""Paper-style table of Sequential Prune runs: method x ratio x layer against datasets.

Reads the work dirs that ``eval/VLMEvalKit/run.py`` wrote (one folder per model
name, holding ``seqprune_setting.json``, ``seqprune_results.json`` and
``seqprune_stats/*.jsonl``) and writes one table as Markdown, CSV and XLSX::

    python scripts/collect_results.py outputs/llava --ratios 0.5 0.75 0.9 --layers 2 3 5

Columns: each dataset's main metric, their average, the mean of each dataset's
score as % of the unpruned run's, and efficiency from the per-sample stats:
image tokens per layer, prefill FLOPs and measured prefill time as fractions of
the unpruned run in the same work dir; and the number of empty answers and
failed rows. Nothing is dropped: a run or dataset that is absent, unfinished
or failed stays in the table with a marker (see ``MARKERS``); averages over
incomplete rows say so instead of a number. ``run.py`` writes each dataset's
result as soon as VLMEvalKit finishes it, so a run that died later still shows
the datasets it finished.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from SequentialPrune.evaluation.results.summary import RESULTS_FILE
from SequentialPrune.evaluation.run_folder.identity import SETTING_FILE
from SequentialPrune.evaluation.run_folder.logs import STATS_DIR
from SequentialPrune.evaluation.safe_io import read_json

MARKERS = {
    "missing": "no run or no file for this dataset",
    "partial": "inference started but no prediction file (interrupted)",
    "no-eval": "predictions exist but no evaluation result",
    "failed": "the run recorded an error for this dataset, or all its answers are empty",
    "failed rows": "some rows failed (index and reason in seqprune_failures/); the score counts them as wrong",
    "unreadable": "the run folder's setting record cannot be read (the status column says why)",
}
# Table rows: the decoder-side methods, those that prune before the decoder, then the vision-side ones (issue 23), then
# custom; a method not named here (registered elsewhere) sorts last.
METHOD_ORDER = {m: i for i, m in enumerate(("none", "fastv", "sequential", "random", "random_oneshot", "pdrop", "dart",
                                             "divprune", "spatial", "fastervlm", "visionzip", "vispruner", "hiprune",
                                             "cdpruner", "custom"))}


@dataclass
class Run:
    work_dir: Path
    name: str                      # registered model name (folder)
    model: str                     # our base model name
    prune: dict
    datasets: List[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    stats: Dict[Tuple[str, object], dict] = field(default_factory=dict)
    exists: bool = True
    unreadable: Optional[str] = None  # why its setting file cannot be read (the run is listed, not dropped)

    @property
    def dir(self) -> Path:
        return self.work_dir / self.name

    @property
    def key(self) -> Tuple[str, str, str]:
        if self.unreadable:  # the tag its folder name carries, so the grid does not list it again as missing
            return str(self.work_dir), self.model, self.name[len(self.model) + 1:]
        return str(self.work_dir), self.model, tag_of(self.prune)


def tag_of(prune: dict) -> str:
    """The setting's tag (as in the folder name), from a ``PruneConfig.to_dict()``."""
    from SequentialPrune import PruneConfig
    return PruneConfig.from_dict(prune).tag()


def read_stats(run_dir: Path) -> Dict[Tuple[str, object], dict]:
    """Per-sample stats, one per (dataset, index); a re-generated sample keeps its last line."""
    out = {}
    for f in sorted((run_dir / STATS_DIR).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            out[(rec.get("dataset"), rec.get("index"))] = rec
    return out


def _model_of(folder: str) -> str:
    """Our model name a run folder's name starts with (the folder name itself if none does)."""
    from SequentialPrune.evaluation.catalog import MODELS

    bases = [b for b in MODELS if folder.startswith(b + "_")]
    return max(bases, key=len) if bases else folder


def find_runs(work_dir: Path) -> List[Run]:
    runs = []
    for setting_path in sorted(Path(work_dir).glob(f"*/{SETTING_FILE}")):
        run_dir = setting_path.parent
        rec = read_json(setting_path)
        if not isinstance(rec, dict) or not isinstance(rec.get("identity"), dict):
            runs.append(Run(Path(work_dir), run_dir.name, _model_of(run_dir.name), {}, unreadable=(
                f"{setting_path} is not a setting record (cut short or edited by hand)")))
            continue
        ident = rec.get("identity", {})
        datasets = []
        for launch in rec.get("launches", []):
            datasets += [d for d in launch.get("datasets", []) if d not in datasets]
        run = Run(Path(work_dir), run_dir.name, ident.get("model", run_dir.name), ident.get("prune", {}),
                  datasets, read_json(run_dir / RESULTS_FILE) or {}, read_stats(run_dir))
        try:
            tag_of(run.prune)
        except (ValueError, TypeError) as e:  # e.g. an older layout of the record
            run.unreadable = f"its pruning setting cannot be read ({e})"
        runs.append(run)
    return runs


def cell(run: Run, dataset: str):
    """A number, or a marker from MARKERS."""
    if run.unreadable:
        return "unreadable"
    if not run.exists:
        return "missing"
    res = run.results.get(dataset)
    if res and res.get("value") is not None and not res.get("problem"):
        return float(res["value"])
    if res and str(res.get("problem") or "").startswith("failed rows"):
        return "failed rows"
    if res and str(res.get("problem") or "").startswith("failed"):
        return "failed"
    if any(run.dir.glob(f"{run.name}_{dataset}.*")):
        return "no-eval"
    if any(run.dir.glob(f"*_{dataset}.pkl")) or any(k[0] == dataset for k in run.stats):
        return "partial"
    return "missing"


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def efficiency(run: Run, datasets: Sequence[str], base: Optional[Run]) -> dict:
    recs = {k: v for k, v in run.stats.items() if k[0] in datasets}
    out = {"samples": len(recs),
           "avg image tokens/layer": _mean([r.get("avg_image_tokens_per_layer") for r in recs.values()]),
           "prefill FLOPs (x unpruned)": None, "prefill time ms": None, "prefill time (x unpruned)": None}
    pruned = [r.get("prefill_flops") for r in recs.values()]
    full = [r.get("prefill_flops_unpruned") for r in recs.values()]
    if recs and None not in pruned and None not in full and sum(full) > 0:
        out["prefill FLOPs (x unpruned)"] = sum(pruned) / sum(full)
    t = _mean([r.get("prefill_time_s") for r in recs.values()])
    out["prefill time ms"] = None if t is None else 1000 * t
    peak = [r.get("peak_memory_bytes", r.get("batch_peak_memory_bytes")) for r in recs.values()]
    out["peak memory GiB"] = max(peak) / 2**30 if peak and None not in peak else None  # None: CPU, not measured
    if base is not None and base.exists:
        shared = [k for k in recs if k in base.stats]  # the same samples in both runs
        mine = _mean([recs[k].get("prefill_time_s") for k in shared])
        theirs = _mean([base.stats[k].get("prefill_time_s") for k in shared])
        if mine is not None and theirs:
            out["prefill time (x unpruned)"] = mine / theirs
    return out


def grid_setting(method: str, ratio: float, layer: int, step: float, cache_mode: str = "static",
                 score_dtype: str = "float32") -> dict:
    """The setting dict of one grid point: the step (percentage points) only where the method's schedule has one,
    the score precision only where its scorer uses attention probabilities; a layer the method refuses (VisionZip
    runs at K = 0 only) is replaced by the method's own."""
    from SequentialPrune import METHODS, SCHEDULES, SCORERS, PruneConfig
    d = dict(method=method, ratio=ratio, cache_mode=cache_mode)
    if SCHEDULES[METHODS[method].schedule].uses_layer:  # PyramidDrop's and custom layers are their options
        d["layer"] = layer
        try:
            PruneConfig(method, ratio=ratio, layer=layer)
        except ValueError:  # a method that prunes at one layer only (VisionZip merges before the decoder): its own
            d["layer"] = PruneConfig(method, ratio=ratio).layer
    if SCHEDULES[METHODS[method].schedule].uses_step:
        d["step"] = step / 100
    if SCORERS[METHODS[method].scorer].uses_score_dtype:
        d["score_dtype"] = score_dtype
    return d


def answer_counts(run: Run, datasets: Sequence[str]) -> dict:
    """Empty answers and failed rows summed over ``datasets`` (None where a dataset has no count yet)."""
    out = {}
    for col, key in (("empty answers", "empty_answers"), ("failed rows", "failed_rows")):
        vals = [(run.results.get(d) or {}).get(key) for d in datasets]
        out[col] = sum(vals) if vals and None not in vals else None
    return out


def expected_runs(found: List[Run], work_dirs: Sequence[Path], models: Optional[Sequence[str]],
                  methods: Sequence[str], ratios: Sequence[float], layers: Sequence[int], step: float,
                  cache_mode: str = "static", score_dtype: str = "float32") -> List[Run]:
    """Runs the grid asks for that are not in ``found``, as placeholders marked missing."""
    have = {r.key for r in found}
    out = []
    for wd in work_dirs:
        bases = list(models or dict.fromkeys(r.model for r in found if r.work_dir == Path(wd)))
        for model in bases:
            grid = [{"method": "none"}] + [grid_setting(m, r, k, step, cache_mode, score_dtype)
                                           for m in methods if m != "none" for r in ratios for k in layers]
            for prune in grid:
                run = Run(Path(wd), f"{model}_{tag_of(prune)}", model, prune, exists=False)
                if run.key not in have:
                    have.add(run.key)
                    out.append(run)
    return out


def _fmt(v, digits=2):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}f}"


LEVELS = ("Few", "Medium", "Many")  # MileBench's image-quantity levels


def groups_of(runs: Sequence[Run], cols: Sequence[str]) -> Dict[str, List[str]]:
    """{group: its datasets among ``cols``}, from the ``group`` the front end recorded per dataset (MileBench's
    Realistic Temporal / Realistic Semantic / Diagnostic); empty when no front end recorded one."""
    out: Dict[str, List[str]] = {}
    for d in cols:
        group = next((r.results[d].get("group") for r in runs if (r.results.get(d) or {}).get("group")), None)
        if group:
            out.setdefault(group, []).append(d)
    return out


def group_cells(run: Run, cells: dict, groups: Dict[str, List[str]]) -> dict:
    """Each group's mean over its datasets ("incomplete" unless all are numbers), then each image-quantity
    level's mean over the datasets that report it."""
    out = {}
    for group, members in groups.items():
        nums = [cells[d] for d in members if isinstance(cells[d], float)]
        out[f"{group} (mean)"] = sum(nums) / len(nums) if len(nums) == len(members) else "incomplete"
    if groups:
        for level in LEVELS:
            vals = [(run.results.get(d) or {}).get("image_quantity_levels", {}).get(level)
                    for d in cells if isinstance(cells[d], float)]
            out[f"{level} images"] = _mean([float(v) for v in vals if v is not None])
    return out


def build_table(work_dirs: Sequence[Path], datasets: Optional[Sequence[str]] = None,
                models: Optional[Sequence[str]] = None, methods: Sequence[str] = ("fastv", "sequential"),
                ratios: Sequence[float] = (), layers: Sequence[int] = (), step: float = 10.0,
                cache_mode: str = "static", score_dtype: str = "float32"):
    """The table as a list of row dicts (values: numbers, markers or None) and the dataset columns."""
    runs = [r for wd in work_dirs for r in find_runs(Path(wd))]
    if ratios and layers:
        runs += expected_runs(runs, [Path(w) for w in work_dirs], models, methods, ratios, layers, step,
                              cache_mode, score_dtype)
    if models:
        runs = [r for r in runs if r.model in models]
    cols = list(datasets or dict.fromkeys(d for r in runs for d in r.datasets))
    groups = groups_of(runs, cols)
    base_of = {(str(r.work_dir), r.model): r for r in runs if r.prune.get("method") == "none" and not r.unreadable}
    rows = []
    last = len(METHOD_ORDER)
    for run in sorted(runs, key=lambda r: (str(r.work_dir), r.model, METHOD_ORDER.get(r.prune.get("method"), last),
                                           r.prune.get("ratio") or 0, r.prune.get("layer") or 0, r.name)):
        p = run.prune
        method = p.get("method", "?")
        row = {"work dir": str(run.work_dir), "model": run.model, "method": method,
               "ratio": p.get("ratio") if method != "none" else 0.0,
               "layer": p.get("layer") if method != "none" else None,
               "step %": 100 * p["step"] if p.get("step") is not None else None,
               "setting": run.name if run.unreadable else tag_of(p)}
        cells = {d: cell(run, d) for d in cols}
        row.update(cells)
        numbers = [v for v in cells.values() if isinstance(v, float)]
        complete = len(numbers) == len(cols) and cols
        row["Average"] = sum(numbers) / len(numbers) if complete else "incomplete"
        base = base_of.get((str(run.work_dir), run.model))
        rel = None
        if complete and base is not None:
            base_cells = [cell(base, d) for d in cols]
            if all(isinstance(b, float) and b != 0 for b in base_cells):
                rel = 100 * sum(cells[d] / b for d, b in zip(cols, base_cells)) / len(cols)
        row["% of unpruned"] = rel
        row.update(group_cells(run, cells, groups))
        row.update(efficiency(run, cols, base))
        row.update(answer_counts(run, cols))
        marks = sorted({v for v in cells.values() if isinstance(v, str)})
        row["status"] = ("missing run" if not run.exists else f"unreadable: {run.unreadable}" if run.unreadable
                         else "ok" if not marks else ", ".join(marks))
        rows.append(row)
    return rows, cols


def to_markdown(rows: List[dict], cols: List[str]) -> str:
    if not rows:
        return "(no runs found)\n"
    headers = list(rows[0])
    digits = {"prefill FLOPs (x unpruned)": 3, "prefill time (x unpruned)": 3, "prefill time ms": 2,
              "avg image tokens/layer": 1, "samples": 0, "ratio": 2, "layer": 0, "step %": 0,
              "empty answers": 0, "failed rows": 0}
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[h], digits.get(h, 2)) for h in headers) + " |")
    legend = "; ".join(f"`{k}`: {v}" for k, v in MARKERS.items())
    return "\n".join(lines) + f"\n\nMarkers: {legend}. `n/a`: not computable (no unpruned run or a zero score).\n"


def write_outputs(rows: List[dict], cols: List[str], prefix: Path) -> List[Path]:
    import pandas as pd

    prefix.parent.mkdir(parents=True, exist_ok=True)
    md = prefix.with_suffix(".md")
    md.write_text(to_markdown(rows, cols))
    df = pd.DataFrame(rows)
    csv = prefix.with_suffix(".csv")
    df.to_csv(csv, index=False)
    written = [md, csv]
    try:
        xlsx = prefix.with_suffix(".xlsx")
        df.to_excel(xlsx, index=False)
        written.append(xlsx)
    except ImportError as e:  # openpyxl missing: the CSV has the same content
        print(f"collect_results: no XLSX ({e})", file=sys.stderr)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("work_dirs", nargs="+", type=Path, help="work dirs given to run.py --work-dir")
    p.add_argument("--out", type=Path, default=None,
                   help="output prefix (default: <first work dir>/seqprune_summary); writes .md .csv .xlsx")
    p.add_argument("--datasets", nargs="+", default=None, help="columns, in order (default: all found)")
    p.add_argument("--models", nargs="+", default=None, help="our base model names to include (default: all)")
    p.add_argument("--methods", nargs="+", default=["fastv", "sequential"],
                   help="methods of the expected grid (with --ratios and --layers)")
    p.add_argument("--ratios", nargs="+", type=float, default=[], help="expected ratios: absent runs are marked")
    p.add_argument("--layers", nargs="+", type=int, default=[], help="expected layers: absent runs are marked")
    p.add_argument("--step", type=float, default=10.0, help="step (percentage points) of the expected grid")
    p.add_argument("--cache-mode", choices=("static", "recompute"), default="static",
                   help="cache mode of the expected grid (run.py --cache-mode)")
    p.add_argument("--score-dtype", choices=("float32", "model"), default="float32",
                   help="score precision of the expected grid's attention-scored methods (run.py --score-dtype)")
    a = p.parse_args(argv)
    if bool(a.ratios) != bool(a.layers):
        p.error("--ratios and --layers go together (they define the expected grid)")
    missing = [str(w) for w in a.work_dirs if not w.is_dir()]
    if missing:  # a typo must not create a folder of empty summaries
        print(f"collect_results: error: no such work dir: {', '.join(missing)} (give the --work-dir of run.py)",
              file=sys.stderr)
        return 2
    rows, cols = build_table(a.work_dirs, a.datasets, a.models, a.methods, a.ratios, a.layers, a.step,
                             a.cache_mode, a.score_dtype)
    if not rows:
        print(f"collect_results: error: no runs in {', '.join(map(str, a.work_dirs))} (no */{SETTING_FILE}); "
              "nothing written", file=sys.stderr)
        return 1
    out = a.out or (a.work_dirs[0] / "seqprune_summary")
    print(to_markdown(rows, cols))
    try:
        written = write_outputs(rows, cols, out)
    except OSError as e:  # the table is printed above; say why it is not saved, without a traceback
        print(f"collect_results: error: cannot write {e.filename or out}: {e.strerror or e} (the table above was "
              "not saved; choose another --out)", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
