"""Benchmark visual-token pruning: speed, memory, KV cache and FLOPs of every method (none, fastv, sequential, ...)

Builds full-size models from configs with random weights (or loads real ones with
``--model-path``), feeds synthetic prompts with the real image-token layout, and
times vision tower, prefill, decode and end-to-end generation for every method
over a grid of ratios and layers (or equal budgets), interleaving the settings
and repeating them. Writes ``<name>.json`` (every raw number), ``<name>.md``
(tables and target checks) and ``<name>.png`` (prefill time vs image tokens).

    python scripts/benchmark.py --preset cpu-mid-2880 --methods none fastv sequential score_only \\
        --ratios 0.5 0.75 0.9 --layers 2 --repeats 3 --out outputs/bench
    python scripts/benchmark.py --preset llava-1.5-7b --attn sdpa eager --budget 192 128 64
    python scripts/benchmark.py --preset llava-1.5-7b --methods none sequential pdrop --before visionzip \
        --before-ratio 0.666 --ratios 0.5 0.75    # each pruned setting after VisionZip's 576 -> 192

With ``--batch`` sizes other than 1 it measures throughput instead (``scripts/bench/throughput.py``): samples/s,
generated tokens/s and peak memory per setting and batch size, answering the same prompts at every size; the
prompts cycle through the ``--images`` counts and the ``--image-size`` sizes in parallel (mixed shapes, each row
pruned by its own schedule):

    python scripts/benchmark.py --preset cpu-mid-qwen2-vl --batch 1 4 8 --image-size 448x448 224x448 448x672 \
        --methods none fastv sequential --ratios 0.75 --layers 2
"""
from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # scripts/ is not installed: run as a file, import it from the repository root
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from SequentialPrune import PruneConfig  # noqa: E402
from SequentialPrune.config import before_methods, parse_option  # noqa: E402
from SequentialPrune.config import before_stage as core_before_stage  # noqa: E402
from scripts.bench.inputs import make_layout  # noqa: E402
from scripts.bench.methods import BENCH_METHODS, expand  # noqa: E402
from scripts.bench.presets import PRESETS, build_random, load_pretrained, resolve_dtype  # noqa: E402
from scripts.bench.report import machine_info, markdown, plot, write_json  # noqa: E402
from scripts.bench.runner import Bench  # noqa: E402
from scripts.bench import throughput  # noqa: E402
from scripts.bench.targets import evaluate  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="presets: " + ", ".join(
        f"{n} ({p.tier})" for n, p in PRESETS.items()), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", nargs="+", default=["tiny-llava"], choices=sorted(PRESETS), metavar="PRESET",
                    help="model presets with random weights (see the list below)")
    ap.add_argument("--model-path", help="load real weights from this folder or hub id instead of a preset")
    ap.add_argument("--methods", nargs="+", default=["none", "fastv", "sequential"], choices=list(BENCH_METHODS))
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.75, 0.9], help="pruning ratios R")
    ap.add_argument("--layers", nargs="+", type=_layer, default=[2],
                    help="first pruned layers K; 'paper' = each method's own (e.g. 0 for divprune, 8 for pdrop)")
    ap.add_argument("--prune-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                    help="schedule/scorer options for the methods that have them, e.g. stages=2,8,16 (pdrop), "
                         "schedule=2:0.5,6:0.25 (custom; needed to run custom), image_pivots=4 (dart)")
    ap.add_argument("--before", choices=before_methods(), metavar="METHOD",
                    help="prune once before the decoder (layer 0) with METHOD in every pruned setting, then the "
                         "setting's own method on the tokens left (the none baseline stays unpruned); one of "
                         + ", ".join(before_methods()))
    ap.add_argument("--before-ratio", type=float, metavar="R",
                    help="fraction of image tokens the --before stage drops (default: its method's)")
    ap.add_argument("--before-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the --before method, e.g. contextual_ratio=0.2 (visionzip); repeatable")
    ap.add_argument("--step", type=float, default=0.1, help="stepwise schedules' step (fraction of N)")
    ap.add_argument("--budget", nargs="+", type=float,
                    help="average image tokens per layer: a fraction of N if <= 1, else a token count (as run.py's "
                         "--prune-budget); solves R per method instead of --ratios")
    ap.add_argument("--attn", nargs="+", default=["sdpa"], help="text attention: sdpa, eager, flash_attention_2")
    ap.add_argument("--images", nargs="+", type=int, help="images per prompt (default: the preset's)")
    ap.add_argument("--image-size", nargs="+", default=None, metavar="HxW",
                    help="image sizes for dynamic-resolution families, e.g. 448x448 1344x1344")
    ap.add_argument("--text-tokens", type=int, default=40, help="text tokens per prompt")
    ap.add_argument("--batch", nargs="+", type=int, default=[1],
                    help="batch sizes; other than 1: measure throughput on mixed-shape batches (see above)")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated (forced with min_new_tokens)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of each setting (medians)")
    ap.add_argument("--slow-repeats", type=int, help="repetitions of slow methods (original); default --repeats")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs per setting (2 new tokens each)")
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto")
    ap.add_argument("--dtype", help="float32, bfloat16, float16 (default: the preset's on GPU, float32 on CPU)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/benchmark", help="output folder (outputs/ is git-ignored)")
    ap.add_argument("--name", default="benchmark", help="output file stem")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--replot", nargs="+", metavar="JSON",
                    help="measure nothing: redraw <out>/<name>.png from saved JSON files (all their panels)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:  # a bad --before fails here, before any model is built
        before_stage(args)
    except ValueError as e:
        ap.error(str(e))
    return args


def before_stage(args) -> "PruneConfig | None":
    """The ``--before`` stage (None without one); ValueError naming the flags for a bad one."""
    if args.before is not None:
        if all(m == "none" for m in args.methods):
            raise ValueError(f"--before wraps the pruned settings, and --methods {' '.join(args.methods)} has none: "
                             f"add a method, or benchmark {args.before} alone with --methods none {args.before}")
        if args.batch != [1]:  # the throughput sweep builds its own grid (scripts/bench/throughput.py)
            raise ValueError("--before is not supported with --batch (the throughput sweep); measure the combination "
                             "at batch 1, or benchmark the before method alone in --methods")
    options = dict(args.before_option)
    if len(options) != len(args.before_option):
        raise ValueError(f"--before-option repeats a key: {[k for k, _ in args.before_option]}")
    return core_before_stage(args.before, args.before_ratio, options,
                             {"method": "--before METHOD", "ratio": "--before-ratio", "option": "--before-option"})


def with_before(settings, before, n_image: int, num_layers: int):
    """Each pruned setting of the grid run after ``before`` (the stock model stays as it is): its ratio, or its
    budget's solved ratio, is of the tokens ``before`` leaves; a grid point no combination fits is kept, marked."""
    if before is None or not before.prunes:
        return settings
    out = []
    for s in settings:
        if s.config is None:  # the stock model, or a grid point that is no config at all (its note says why)
            out.append(s)
            continue
        cfg = s.config
        try:
            cfg = cfg.replace(before=before)
            if s.budget is not None:  # budget rows: s.budget is a token count of N (as expand solved it)
                cfg = cfg.solve_ratio(s.budget, n_image, num_layers)
            cfg.check_model(num_layers)
            out.append(replace(s, config=cfg, status="ok", note=""))
        except ValueError as e:
            out.append(replace(s, config=cfg, status="unreachable" if s.budget is not None else "invalid",
                               note=f"with --before {before.method}: {e}"))
    return out


def _layer(text: str):
    return None if text == "paper" else int(text)


def _option(text: str):
    try:
        return parse_option(text)
    except ValueError as e:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(e)) from None


def _progress(disable: bool):
    """A tqdm bar whose total grows block by block; a silent stand-in where tqdm is missing."""
    try:
        from tqdm import tqdm
        return tqdm(total=0, disable=disable, desc="benchmark", unit="run", dynamic_ncols=True)
    except ImportError:  # the GPU machine's env may lack tqdm
        class _Null:
            total = 0
            def update(self, n=1): pass
            def refresh(self): pass
            def set_postfix_str(self, s): pass
            def close(self): pass
        return _Null()


def _image_sizes(args, preset):
    if args.image_size:
        return [tuple(int(v) for v in s.lower().split("x")) for s in args.image_size]
    return [preset.image_size if preset else None]


def _check_attn(names, device) -> None:
    from transformers.utils import is_flash_attn_2_available
    ok = {"sdpa", "eager"} | ({"flash_attention_2"} if device.type == "cuda" and is_flash_attn_2_available() else set())
    bad = [a for a in names if a not in ok]
    if bad:
        raise SystemExit(f"attention {bad} not available here; choose from {sorted(ok)}")


def _blocks(args, device, release):
    """(label, model, images, image size) per input block; presets sharing a model key share the instance.

    ``release()`` is called before a new model is built, so two large models never coexist.
    """
    for label, model, p in _models(args, device, release):
        for images in args.images or [p.images if p else 1]:
            for size in _image_sizes(args, p):
                yield label, model, images, size


def _mixed_shapes(args, p) -> list:
    """The throughput prompts' shapes: the ``--images`` counts and ``--image-size`` sizes cycled in parallel."""
    images, sizes = args.images or [p.images if p else 1], _image_sizes(args, p)
    return [(images[i % len(images)], sizes[i % len(sizes)]) for i in range(max(len(images), len(sizes)))]


def _models(args, device, release):
    """(label, model, preset or None) per preset (or ``--model-path``)."""
    if args.model_path:  # the vision tower stays on sdpa; the text attention is set per run
        model = load_pretrained(args.model_path, device, resolve_dtype(args.dtype, None, device), "sdpa")
        yield Path(args.model_path).name, model, None
        return
    built = {}
    for name in args.preset:
        p = PRESETS[name]
        if p.tier == "gpu" and device.type != "cuda":
            raise SystemExit(f"preset {name} has full-size dimensions and needs a GPU; on CPU use cpu-mid-576, "
                             f"cpu-mid-2880 or a tiny-* preset")
        if p.key not in built:
            built.clear()
            release()
            built[p.key] = build_random(p, device, resolve_dtype(args.dtype, p, device), "sdpa", args.seed)
        yield name, built[p.key], p


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.replot:
        return _replot(args)
    before = before_stage(args)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    _check_attn(args.attn, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = _writable_out(Path(args.out))  # before measuring: a bad --out must not cost the measurements
    if args.batch != [1]:
        return _throughput(args, device, out_dir, argv)
    rows, t_start, dtype = [], time.time(), None
    bar = _progress(args.no_progress)
    state = {"bench": None}

    def release():
        if state["bench"] is not None:
            state["bench"].probe.remove()
        state["bench"] = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for label, model, images, size in _blocks(args, device, release):
        if state["bench"] is None or state["bench"].model is not model:
            release()
            state["bench"] = Bench(model, args, label, device)
        bench = state["bench"]
        bench.label, dtype = label, model.dtype
        layout = make_layout(model, images, size, args.text_tokens, 1, args.seed)
        settings = expand(args.methods, args.attn, args.ratios, args.layers, args.step, args.budget,
                          layout.n_image_tokens, bench.num_layers, dict(args.prune_option))
        settings = with_before(settings, before, layout.n_image_tokens, bench.num_layers)
        bar.total = (bar.total or 0) + _runs(settings, args)
        bar.refresh()
        rows += bench.block(layout, settings, bar)
        del model, bench, layout  # let release() free the model before the next one is built
    bar.close()
    release()
    for r in rows:
        r["run"] = args.name
    cmd = [Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))
    report = {
        "meta": {"command": "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in cmd[1:]),
                 "argv": cmd, "args": vars(args), "machine": machine_info(device),
                 "dtype": str(dtype).replace("torch.", ""), "new_tokens": args.new_tokens,
                 "repeats": args.repeats, "slow_repeats": args.slow_repeats or args.repeats, "warmup": args.warmup,
                 "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_start)),
                 "wall_s": time.time() - t_start},
        "rows": rows,
    }
    report["targets"] = evaluate(rows)
    stem = out_dir / args.name
    png = stem.with_suffix(".png")
    try:
        report["plot"] = str(png) if not args.no_plot and plot(report, png) else None
        write_json(report, stem.with_suffix(".json"))
        stem.with_suffix(".md").write_text(markdown(report))
    except OSError as e:  # the folder was writable at start: print what was measured, then say what failed
        report.setdefault("plot", None)
        print(markdown(report))
        raise SystemExit(f"benchmark.py: error: cannot write the report into {out_dir}: {e}; the tables are "
                         "printed above") from None
    print(f"wrote {stem}.json, {stem}.md" + (f", {png}" if report["plot"] else ""))
    return report


def _throughput(args, device, out_dir: Path, argv) -> dict:
    """The throughput sweep (``scripts/bench/throughput.py``) over every preset; writes <name>.json and .md."""
    if any(b < 1 for b in args.batch):
        raise SystemExit(f"benchmark.py: error: --batch sizes must be >= 1, got {args.batch}")
    if args.budget:
        raise SystemExit("benchmark.py: error: --budget solves R for one image-token count, but the rows of a mixed "
                         "batch have several: give --ratios with --batch")
    t_start, rows, state, dtype = time.time(), [], {"bench": None}, None
    bar = _progress(args.no_progress)

    def release():
        if state["bench"] is not None:
            state["bench"].probe.remove()
        state["bench"] = None
        gc.collect()

    for label, model, p in _models(args, device, release):
        release()
        bench = state["bench"] = Bench(model, args, label, device)
        dtype = model.dtype
        bar.total = (bar.total or 0) + throughput.runs_needed(len(args.methods) * len(args.ratios) * len(args.layers)
                                                              * len(args.attn), args)
        rows += throughput.sweep(bench, args, _mixed_shapes(args, p), bar)
        del model, bench
    bar.close()
    release()
    cmd = [Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))
    report = {"meta": {"command": "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in cmd[1:]),
                       "args": vars(args), "machine": machine_info(device), "dtype": str(dtype).replace("torch.", ""),
                       "new_tokens": args.new_tokens, "repeats": args.repeats, "warmup": args.warmup,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_start)),
                       "wall_s": time.time() - t_start},
              "throughput": rows}
    m = report["meta"]["machine"]
    text = "\n".join([f"Command: `{report['meta']['command']}`", "",
                      f"Machine: {m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads), GPU: "
                      f"{m['gpu'] or 'none'}; torch {m['torch']}, transformers {m['transformers']}; "
                      f"{report['meta']['dtype']}, {args.new_tokens} new tokens, medians of {args.repeats}.",
                      *throughput.markdown(rows), ""])
    stem = out_dir / args.name
    try:
        write_json(report, stem.with_suffix(".json"))
        stem.with_suffix(".md").write_text(text)
    except OSError as e:
        print(text)
        raise SystemExit(f"benchmark.py: error: cannot write the report into {out_dir}: {e}; the tables are "
                         "printed above") from None
    print(text)
    print(f"wrote {stem}.json, {stem}.md")
    return report


def _writable_out(out_dir: Path) -> Path:
    """``--out``, created; SystemExit with one line if it is not a writable folder."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise SystemExit(f"benchmark.py: error: --out {out_dir} is not a writable folder ({e.strerror or e}); "
                         "choose another --out") from None
    return out_dir


def _replot(args) -> dict:
    reports = [json.loads(Path(p).read_text()) for p in args.replot]
    for path, rep in zip(args.replot, reports):  # panels are per run, so label rows with their file
        for r in rep["rows"]:
            r["run"] = Path(path).stem
    merged = {"meta": reports[0]["meta"], "rows": [r for rep in reports for r in rep["rows"]]}
    png = Path(args.out) / f"{args.name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    merged["plot"] = str(png) if plot(merged, png) else None
    print(f"wrote {merged['plot']}")
    return merged


def _runs(settings, args) -> int:
    ok = [s for s in settings if s.status == "ok"]
    slow = sum(BENCH_METHODS[s.method].slow for s in ok)
    return len(ok) * (args.warmup + args.repeats) + slow * ((args.slow_repeats or args.repeats) - args.repeats)


if __name__ == "__main__":
    main()
