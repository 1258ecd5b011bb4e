"""The masked-reference oracle at full size: physical pruning vs the masked eager reference (SequentialPrune.testing)
on random-weight models with the real configs, in half precision, and how far apart they land.

In float32 the two agree exactly (the test suite asserts it on tiny models). In bf16/fp16 the sums round in
another order, so near-ties can flip a pick and logits drift; this reports by how much rather than asserting:

    python scripts/gpu/oracle.py --presets llava-1.5-7b qwen2-vl-7b qwen3-vl-8b --dtypes bfloat16 float16 \\
        --out outputs/gpu_check/oracle.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # scripts/ is not installed: run as a file, import it from the repository root
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from SequentialPrune import PruneConfig, apply_pruning  # noqa: E402
from SequentialPrune.testing.oracle import masked_reference  # noqa: E402
from scripts.bench.inputs import make_layout  # noqa: E402
from scripts.bench.presets import PRESETS, build_random  # noqa: E402

SETTINGS = {"sequential": PruneConfig("sequential", 0.75, 2), "fastv": PruneConfig("fastv", 0.5, 2)}


def _greedy(model, inputs, n):
    out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences[:, inputs["input_ids"].shape[1]:], torch.stack(out.logits, 1).float()


def compare(model, inputs, cfg: PruneConfig, new_tokens: int) -> dict:
    """Engine vs masked reference on one prompt: picks, last-token logits, greedy tokens."""
    visual_ids = [getattr(model.config, a) for a in ("image_token_id", "video_token_id")
                  if getattr(model.config, a, None) is not None]
    with torch.no_grad():
        full = model(**inputs).logits[:, -1].float()
        with apply_pruning(model, cfg) as pruner:
            last = model(**inputs).logits[:, -1].float()
            seq, steps = _greedy(model, inputs, new_tokens)
        plan = cfg.plan(pruner.stats.n_image_tokens)
        with masked_reference(model, plan, visual_ids, cfg.scorer_name) as ref:
            ref_last = model(**inputs).logits[:, -1].float()
            kept_ref = {k: v.cpu() for k, v in ref.kept_image_indices.items()}
            ref_seq, ref_steps = _greedy(model, inputs, new_tokens)
    kept = {k: v.cpu() for k, v in pruner.stats.kept_image_indices.items()}
    layers = sorted(set(kept) | set(kept_ref))
    same = sum(k in kept and k in kept_ref and torch.equal(kept[k], kept_ref[k]) for k in layers)
    overlap = []
    for k in layers:
        if k in kept and k in kept_ref and kept[k].numel():
            a, b = set(kept[k].flatten().tolist()), set(kept_ref[k].flatten().tolist())
            overlap.append(len(a & b) / len(a | b))
    agree = int((seq == ref_seq).all(0).long().cumprod(0).sum())
    return {
        "n_image_tokens": pruner.stats.n_image_tokens, "pruning_layers": len(layers), "layers_same_picks": same,
        "min_kept_overlap": min(overlap) if overlap else 1.0,
        "logit_gap_vs_reference": (last - ref_last).abs().max().item(),
        "logit_gap_unpruned_vs_reference": (full - ref_last).abs().max().item(),
        "greedy_tokens_agreeing": agree, "new_tokens": new_tokens,
        "step_logit_gap": (steps[:, :agree] - ref_steps[:, :agree]).abs().max().item() if agree else None,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["llava-1.5-7b", "qwen2-vl-7b", "qwen3-vl-8b"],
                    choices=sorted(PRESETS))
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    ap.add_argument("--methods", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--attn", default="sdpa", help="the pruned run's text attention (the reference is eager)")
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", required=True, help="JSON file to write")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    rows = []
    for name in a.presets:
        p = PRESETS[name]
        if p.tier == "gpu" and device.type != "cuda":
            raise SystemExit(f"{name} is full size: it needs a GPU (use tiny-* presets on CPU)")
        for dt in a.dtypes:
            t0 = time.time()
            model = build_random(p, device, getattr(torch, dt), "sdpa")
            model.set_attn_implementation({"text_config": a.attn})
            layout = make_layout(model, p.images, p.image_size, 40, 1, 0)
            built = time.time() - t0
            for m in a.methods:
                t1 = time.time()
                row = dict(preset=name, dtype=dt, method=m, attn=a.attn, setting=SETTINGS[m].tag(),
                           **compare(model, layout.inputs, SETTINGS[m], a.new_tokens))
                row.update(seconds=round(time.time() - t1, 2), build_seconds=round(built, 2))
                rows.append(row)
                print(json.dumps(row), flush=True)
            del model, layout
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report = {"argv": sys.argv if argv is None else list(argv), "device": str(device),
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
              "torch": torch.__version__, "transformers": __import__("transformers").__version__, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
