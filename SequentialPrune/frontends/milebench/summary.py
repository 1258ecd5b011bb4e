"""One table over every setting of a MileBench output folder: each dataset's main metric (x100, as score.py's CSV)
and the efficiency columns from the per-sample stats (image tokens per layer, prefill FLOPs ratio, prefill and
end-to-end seconds), written as ``<output_dir>/milebench_summary.md`` and ``.csv``.

``score.py``'s tables know only MileBench's 29 datasets and Rouge_OCR_VQA; this one takes whatever the run folders
hold (the demo's synthetic sets included), read from ``seqprune_results.json`` and ``seqprune_stats/``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean
from typing import List

from SequentialPrune.evaluation.results.summary import RESULTS_FILE
from SequentialPrune.evaluation.run_folder.identity import SETTING_FILE
from SequentialPrune.evaluation.run_folder.logs import STATS_DIR


def _stats(run_dir: Path) -> List[dict]:
    out = []
    for f in sorted((run_dir / STATS_DIR).glob("*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _avg(rows: List[dict], key: str):
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return round(mean(vals), 4) if vals else None


def rows(output_dir) -> List[dict]:
    """One row per run folder (setting) under ``output_dir``."""
    out = []
    for run in sorted(p for p in Path(output_dir).iterdir() if (p / SETTING_FILE).is_file()):
        results = json.loads((run / RESULTS_FILE).read_text()) if (run / RESULTS_FILE).is_file() else {}
        row = {"setting": run.name}
        for ds, e in sorted(results.items()):
            row[f"{ds} ({e.get('metric')})"] = None if e.get("value") is None else round(100 * e["value"], 2)
            if e.get("failed_rows"):
                row[f"{ds} failed"] = e["failed_rows"]
        st = _stats(run)
        row.update({"samples": len(st), "image tokens": _avg(st, "n_image_tokens"),
                    "avg image tokens/layer": _avg(st, "avg_image_tokens_per_layer"),
                    "prefill FLOPs ratio": _avg(st, "prefill_flops_ratio"),
                    "prefill s": _avg(st, "prefill_time_s"), "end-to-end s": _avg(st, "generate_time_s")})
        out.append(row)
    return out


def write_summary(output_dir) -> Path:
    import pandas as pd

    df = pd.DataFrame(rows(output_dir))
    prefix = Path(output_dir) / "milebench_summary"
    df.to_csv(f"{prefix}.csv", index=False)
    Path(f"{prefix}.md").write_text(df.to_markdown(index=False) + "\n")
    return Path(f"{prefix}.md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="A table over every MileBench setting in an output folder")
    p.add_argument("output_dir")
    a = p.parse_args(argv)
    if not Path(a.output_dir).is_dir():
        p.error(f"{a.output_dir} is not a folder")
    md = write_summary(a.output_dir)
    print(md.read_text())
    print(f"(also {md.with_suffix('.csv')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
