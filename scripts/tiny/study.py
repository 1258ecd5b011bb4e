"""Pruning study on the trained tiny shapes LLaVA: held-out accuracy per method, K and R.

Direct evaluation with the core library: left-padded batches of held-out questions
(every image gives the same 64 image tokens), ``apply_pruning`` with real token
removal, greedy ``generate``, exact match of the one-word/letter answer.  Questions
come from ``scripts/tiny/scenes.py`` with scene seeds from ``HELD_OUT_SEED_START``
(disjoint from the training seeds).

CLI::

    python scripts/tiny/study.py --n 1200 --threads 1 --json /tmp/study.json   # docs/tiny-model-study.md

``--variants DTYPE:CACHE:SCORES ...`` repeats the grid with the model in another dtype, another
cache mode and another score precision, and prints accuracy and time side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from dataclasses import replace

import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # scripts/ is not installed: run as a file, import it from the repository root
    sys.path.insert(0, str(REPO))
from SequentialPrune import PruneConfig, apply_pruning  # noqa: E402
from scripts.tiny import checkpoints as tc  # noqa: E402
from scripts.tiny import scenes as sc  # noqa: E402
from scripts.tiny.train import SYSTEM_PROMPT  # noqa: E402

DEFAULT_CKPT = REPO / "checkpoints" / "tiny-shapes-llava"
METHODS = ("fastv", "sequential", "random", "random_oneshot")
# Every method at its paper's K (PyramidDrop's stages scaled from [8, 16, 24] of 32 layers to 12 layers, and the
# author's earlier low-budget stages), for the equal-budget comparison (--all-methods).
ALL_METHODS = (
    ("fastv K=2", "fastv", {}),
    ("sequential K=2", "sequential", {}),
    ("random K=2", "random", {}),
    ("random_oneshot K=2", "random_oneshot", {}),
    ("pdrop stages 3,6,9", "pdrop", {"options": {"stages": (3, 6, 9)}}),
    ("pdrop stages 1,3,6", "pdrop", {"options": {"stages": (1, 3, 6)}}),
    ("dart K=2", "dart", {}),
    ("divprune K=0", "divprune", {}),
    ("spatial K=0", "spatial", {}),
    ("sequential+dart K=2", "sequential", {"scorer": "dart"}),
    ("custom 1:0.5,4:0.25", "custom", {"options": {"schedule": "1:0.5,4:0.25"}}),
    # the vision-side methods (issue 23): one-shot before the decoder, scored inside the vision tower
    ("fastervlm K=0", "fastervlm", {}),
    ("visionzip K=0", "visionzip", {}),
    ("vispruner K=0", "vispruner", {}),
    ("hiprune K=0", "hiprune", {}),
    ("cdpruner K=0", "cdpruner", {}),
)


def build_inputs(processor, items, system=SYSTEM_PROMPT):
    """Left-padded processor batch for ``(image, row)`` pairs, as the VLMEvalKit wrapper
    prompts them (system prompt, image, then the prompt text)."""
    texts, images = [], []
    for image, row in items:
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": row["prompt"]}]}]
        if system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
        images.append(image)
    return processor(images=images, text=texts, padding=True, return_tensors="pt")


def normalise(text: str) -> str:
    return text.strip().strip(".").strip().lower()


@torch.no_grad()
def evaluate(processor, model, items, config: PruneConfig | None = None, batch=50, answers=None):
    """Per-item correctness and the average image tokens per layer (pruned runs); ``answers`` (a list)
    collects the normalised answers."""
    correct, avgs = [], []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        inputs = build_inputs(processor, chunk)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        n = inputs["input_ids"].shape[1]
        if config is None:
            out = model.generate(**inputs, do_sample=False)
        else:
            # recompute: no KV cache, the whole sequence re-runs (and re-selects) at every generated token
            with apply_pruning(model, config) as p:
                out = model.generate(**inputs, do_sample=False, use_cache=config.cache_mode == "static")
            avgs.append(p.stats.avg_image_tokens_per_layer)
        texts = [normalise(t) for t in processor.tokenizer.batch_decode(out[:, n:], skip_special_tokens=True)]
        correct += [t == normalise(row["answer"]) for t, (_, row) in zip(texts, chunk)]
        if answers is not None:
            answers += texts
    avg = sum(avgs) / len(avgs) if avgs else float(model.config.image_seq_length)
    return correct, avg


def summarise(items, correct) -> dict:
    """Accuracy overall and per question type, with binomial standard errors."""
    def acc(flags):
        p = sum(flags) / len(flags)
        return dict(acc=p, se=math.sqrt(p * (1 - p) / len(flags)), n=len(flags))
    out = {"all": acc(correct)}
    for qtype in sc.QUESTION_TYPES:
        flags = [c for c, (_, row) in zip(correct, items) if row["category"] == qtype]
        if flags:
            out[qtype] = acc(flags)
    return out


def settings(num_layers, n_image, layers=(2, 3), ratios=(0.5, 0.75, 0.9),
             budgets=(0.5, 0.25), methods=METHODS):
    """(table, label, config) rows: the K x R grid, then equal-average-budget rows."""
    rows = [("grid", "none", None)]
    for k in layers:
        for r in ratios:
            for m in methods:
                rows.append(("grid", f"{m} K={k} R={r}", PruneConfig(m, ratio=r, layer=k)))
    for k in layers:
        for frac in budgets:
            for m in methods:
                try:
                    cfg = budget_config(m, frac * n_image, n_image, num_layers, k)
                except ValueError as e:  # e.g. 25% of N at K=3: layers 0-2 alone use most of it
                    print(f"skipped: {e}", file=sys.stderr)
                    continue
                step = f" step={cfg.step:g}" if cfg.step is not None else ""
                rows.append(("budget", f"{m} K={k} avg={frac:g}N R={cfg.ratio:.3f}{step}", cfg))
    return rows


def budget_config(method, avg_tokens, n_image, num_layers, layer=None, steps=(0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5),
                  **fixed):
    """``PruneConfig.for_budget`` at the paper's 10% step, or the smallest larger step
    that reaches the budget (a low budget needs faster progressive pruning); methods
    without a step are solved once. ``layer=None`` keeps the method's own K."""
    from SequentialPrune import METHODS as ALL, SCHEDULES
    if layer is not None:
        fixed["layer"] = layer
    if not SCHEDULES[ALL[method].schedule].uses_step:
        return _for_budget(method, avg_tokens, n_image, num_layers, **fixed)
    last = None
    for step in steps:
        try:
            return _for_budget(method, avg_tokens, n_image, num_layers, step=step, **fixed)
        except ValueError as e:
            last = e
    raise ValueError(f"{method} reaches {avg_tokens:.3g} tokens per layer at no step up to {steps[-1]}: {last}")


_SOLVED: dict = {}  # (schedule with its options, K, step, fixed fields, budget, N, layers) -> (R, average)


def _for_budget(method, avg_tokens, n_image, num_layers, **fixed) -> PruneConfig:
    """``PruneConfig.for_budget``, solved once per schedule: methods that share a schedule, its options, K, step and
    fixed fields (the seven one-shot rows at K = 0) have the same tokens per layer at every R, so the same R; the
    reuse is checked (same average), else solved again."""
    own = PruneConfig(method, **fixed)
    key = (repr(own.schedule_obj), own.layer, own.step, repr(sorted(fixed.items())), avg_tokens, n_image, num_layers)
    if key in _SOLVED:
        r, avg = _SOLVED[key]
        try:
            cfg = PruneConfig(method, ratio=r, **fixed)
            cfg.check_model(num_layers)
            if cfg.average_image_tokens(n_image, num_layers) == avg:
                return cfg
        except ValueError:
            pass
    cfg = PruneConfig.for_budget(method, avg_tokens, n_image, num_layers, **fixed)
    _SOLVED[key] = (cfg.ratio, cfg.average_image_tokens(n_image, num_layers))
    return cfg


def method_settings(num_layers, n_image, budgets, only=None):
    """(table, label, config) rows of every method (or of those whose label contains a string of ``only``) at
    each equal budget (a fraction of N); unreachable pairs are kept as rows without a config."""
    rows = [("methods", "none", None)]
    chosen = [m for m in ALL_METHODS if not only or any(s in m[0] for s in only)]
    if not chosen:
        raise SystemExit(f"--rows {' '.join(only)} matches no method row; rows: {', '.join(m[0] for m in ALL_METHODS)}")
    for frac in budgets:
        for label, method, fixed in chosen:
            try:
                cfg = budget_config(method, frac * n_image, n_image, num_layers, **fixed)
            except ValueError as e:
                rows.append(("methods", f"{label} avg={frac:.3g}N: unreachable", e))
                continue
            step = f" step={cfg.step:g}" if cfg.step is not None else ""
            rows.append(("methods", f"{label} avg={frac:.3g}N R={cfg.ratio:.3f}{step}", cfg))
    return rows


def markdown(results) -> str:
    types = [t for t in sc.QUESTION_TYPES if t in results[0]["summary"]]
    head = "| setting | avg img tok/layer | all | " + " | ".join(types) + " |"
    lines = [head, "|" + "---|" * (3 + len(types))]
    for r in results:
        s = r["summary"]
        if s is None:  # unreachable budget
            lines.append(f"| {r['label']} | - | - | " + " | ".join("-" for _ in types) + " |")
            continue
        cells = [f"{s['all']['acc']:.3f} ± {s['all']['se']:.3f}"]
        cells += [f"{s[t]['acc']:.3f}" if t in s else "-" for t in types]
        lines.append(f"| {r['label']} | {r['avg_tokens']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _variant(text: str):
    dtype, cache, score = (text.split(":") + ["", ""])[:3]
    if dtype not in ("float32", "bfloat16", "float16") or cache not in ("static", "recompute") \
            or score not in ("float32", "model"):
        raise argparse.ArgumentTypeError(f"expected DTYPE:CACHE:SCORES (e.g. float16:recompute:model), got {text!r}")
    return dtype, cache, score


def variant_config(cfg: PruneConfig | None, cache: str, score: str) -> PruneConfig | None:
    """``cfg`` under another cache mode and score precision (the score precision only where it applies)."""
    if cfg is None:
        return None
    kw = dict(cache_mode=cache)
    if cfg.score_dtype is not None:  # attention scorers
        kw["score_dtype"] = score
    return replace(cfg, **kw)


def variants_markdown(results, variants) -> str:
    """Accuracy (± SE) and seconds per setting, one column per variant; then each variant's share of answers
    identical to its dtype's first variant."""
    results = [r for r in results if r["summary"] is not None]  # unreachable budgets have no numbers
    names = [":".join(v) for v in variants]
    first = {}
    for n in names:
        first.setdefault(n.split(":")[0], n)
    by = {(r["label"], r["variant"]): r for r in results}
    for r in results:  # the unpruned model ran once per dtype: its dtype's first column
        if r["config"] is None:
            by[(r["label"], first[r["variant"]])] = r
    labels = list(dict.fromkeys(r["label"] for r in results))
    head = "| setting | " + " | ".join(names) + " |"
    lines = ["accuracy ± SE (seconds)", "", head, "|" + "---|" * (1 + len(names))]
    for label in labels:
        cells = []
        for n in names:
            r = by.get((label, n))
            cells.append("-" if r is None else f"{r['summary']['all']['acc']:.3f} ± {r['summary']['all']['se']:.3f} "
                                               f"({r['seconds']:.0f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "answers identical to the same dtype's first variant", "", head, lines[3]]
    for label in labels:
        if label == "none":
            continue
        cells = []
        for n in names:
            a, b = by.get((label, n)), by.get((label, first[n.split(":")[0]]))
            cells.append("-" if a is None or b is None else
                         f"{sum(x == y for x, y in zip(a['answers'], b['answers'])) / len(a['answers']):.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--ckpt", default=str(DEFAULT_CKPT))
    p.add_argument("--n", type=int, default=600, help="held-out questions (cycling the types)")
    p.add_argument("--seed", type=int, default=sc.HELD_OUT_SEED_START, help="first scene seed")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layers", type=int, nargs="+", default=[2, 3], help="K values")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    p.add_argument("--budgets", type=float, nargs="*", default=[0.5, 0.25],
                   help="equal-budget rows: average image tokens per layer as a fraction of N")
    p.add_argument("--types", nargs="+", default=list(sc.SHIPPED_TYPES),
                   choices=list(sc.QUESTION_TYPES), help="question types (default: shipped)")
    p.add_argument("--only-none", action="store_true", help="unpruned accuracy only")
    p.add_argument("--all-methods", action="store_true",
                   help="instead of the K x R grid: every method at each --budgets (papers: 1/3, 2/9, 1/9 of N)")
    p.add_argument("--rows", nargs="+", metavar="TEXT",
                   help="with --all-methods: only the method rows whose label contains one of these (e.g. dart)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--variants", nargs="+", type=_variant, default=[("float32", "static", "float32")],
                   metavar="DTYPE:CACHE:SCORES",
                   help="model dtype (float32, bfloat16, float16), cache mode (static, recompute) and score "
                        "precision (float32, model) of each pass over the settings (default float32:static:float32)")
    p.add_argument("--json", help="write all results here")
    args = p.parse_args(argv)
    if args.rows and not args.all_methods:
        raise SystemExit("--rows selects rows of --all-methods; for the K x R grid use --methods")
    torch.set_num_threads(args.threads)
    processor, model = tc.load_tiny(args.ckpt)
    items = sc.held_out_questions(args.n, seed=args.seed, types=args.types)
    n_image = model.config.image_seq_length
    num_layers = model.config.text_config.num_hidden_layers
    if args.all_methods:
        rows = method_settings(num_layers, n_image, tuple(args.budgets), args.rows)
    else:
        rows = settings(num_layers, n_image, tuple(args.layers), tuple(args.ratios),
                        tuple(args.budgets), tuple(args.methods))
    if args.only_none:
        rows = rows[:1]
    results, done_none = [], set()
    for dtype, cache, score in args.variants:
        model = model.to(getattr(torch, dtype))
        name = f"{dtype}:{cache}:{score}"
        for table, label, cfg in rows:
            if isinstance(cfg, ValueError):  # an unreachable budget: a row that says so
                print(f"{label}: {cfg}", flush=True)
                results.append(dict(table=table, label=label, avg_tokens=None, variant=name, config=None,
                                    note=str(cfg), summary=None))
                continue
            if cfg is None and dtype in done_none:  # the unpruned model: once per dtype
                continue
            cfg = variant_config(cfg, cache, score)
            answers, t0 = [], time.time()
            correct, avg = evaluate(processor, model, items, cfg, args.batch, answers)
            results.append(dict(table=table, label=label, avg_tokens=avg, variant=dtype if cfg is None else name,
                                config=None if cfg is None else cfg.to_dict(), seconds=time.time() - t0,
                                summary=summarise(items, correct), answers=answers))
            if cfg is None:
                done_none.add(dtype)
            print(f"{name} {label}: acc {results[-1]['summary']['all']['acc']:.3f} "
                  f"avg tokens {avg:.1f} ({results[-1]['seconds']:.0f}s)", flush=True)
    all_results = results
    if len(args.variants) > 1:
        print("\n### variants\n\n" + variants_markdown(results, args.variants))
        first = args.variants[0]  # the per-type tables below: the first variant's
        results = [r for r in results if r["variant"] in (":".join(first), first[0])]
    for table in ("grid", "budget", "methods"):
        chosen = [r for r in results if r["table"] == table or r["label"] == "none"]
        if len(chosen) > 1 or (table == "grid" and not args.all_methods):
            print(f"\n### {table}\n\n" + markdown(chosen))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(all_results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
