"""The offline lmms-eval tasks of these tests (and of eval/lmms-eval/README.md's example): held-out questions of
the tiny shapes benchmark as a local parquet dataset, written with ``datasets``, and task YAMLs beside it (one
generating the answer, one scoring each possible answer by likelihood)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import datasets

from scripts.tiny.scenes import SHAPES, held_out_questions

TASK = "seqprune_tiny"
MC_TASK = "seqprune_tiny_mc"  # the same documents, scored by likelihood over each question's possible answers
SIZES = [(112, 112), (56, 112), (168, 112)]  # Qwen2-VL (patch 14, merge 2): 16, 8 and 24 image tokens

YAML = """task: {task}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {parquet}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


MC_YAML = """task: {task}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {parquet}
test_split: test
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_choice: !function utils.doc_to_choice
doc_to_target: target
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _choices(row: dict) -> list:
    """The possible answers of a question: its option letters, or every answer of its type."""
    if row["kind"] == "MCQ":
        return list("ABCD")
    return list(SHAPES) if row["category"] == "shape" else ["1", "2", "3", "4"]


def write_task(root, n_rows: int, broken: Sequence[int] = ()) -> Path:
    """``root/{test.parquet, utils.py, seqprune_tiny.yaml}``: ``n_rows`` questions, images cycling through
    :data:`SIZES`, the rows in ``broken`` failing in ``doc_to_visual``. Returns ``root`` (``--include_path``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = held_out_questions(n_rows)
    images = [im.resize(SIZES[i % len(SIZES)]) for i, (im, _) in enumerate(rows)]
    ds = datasets.Dataset.from_dict({
        "question": [r["prompt"] for _, r in rows], "answer": [r["answer"] for _, r in rows],
        "choices": [_choices(r) for _, r in rows], "target": [_choices(r).index(r["answer"]) for _, r in rows],
        "broken": [i in broken for i in range(n_rows)], "image": images}).cast_column("image", datasets.Image())
    ds.to_parquet(str(root / "test.parquet"))
    shutil.copy(Path(__file__).with_name("task_utils.py"), root / "utils.py")
    (root / f"{TASK}.yaml").write_text(YAML.format(task=TASK, parquet=(root / "test.parquet").resolve()))
    (root / f"{MC_TASK}.yaml").write_text(MC_YAML.format(task=MC_TASK, parquet=(root / "test.parquet").resolve()))
    return root


if __name__ == "__main__":
    import sys

    print(write_task(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60))
