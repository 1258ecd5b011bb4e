"""``--dump-inputs FILE``: every sample's model input without running the model, one JSON line per sample.

Each line: ``dataset``, ``sample_id``, ``context`` (the prompt text before the model's template), ``prompt`` (the
string the model's ids are built from), ``input_ids`` (image tokens expanded as the model sees them),
``image_positions`` ([start, end) runs of image tokens), ``image_tokens`` (their count), ``images`` (the files, in
order), ``pixel_shape``; or ``error`` for a sample whose input cannot be built. Only the processor loads.
"""
from __future__ import annotations

import json
from pathlib import Path

from SequentialPrune.evaluation.safe_io import replacing

from .inputs import image_runs, input_builder


def dump_inputs(run, args, path: Path) -> int:
    """Write the inputs of every sample of ``args.datasets`` to ``path``; return the number of samples."""
    from transformers import AutoProcessor

    from .generate import sample_builders

    processor = AutoProcessor.from_pretrained(run.model_path)
    builder = input_builder(processor, run)
    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ds in args.datasets:
            for sid, build in sample_builders(args, ds, builder.text_tokenizer):
                rec = {"dataset": ds, "sample_id": sid}
                try:
                    sample = build()
                    inputs = builder(sample, ds)
                    ids = inputs["input_ids"][0].tolist()
                    runs = image_runs(ids, builder.image_id)
                    pixels = inputs.get("pixel_values")
                    rec.update(context=sample.context, prompt=builder.prompt(sample, ds), input_ids=ids,
                               image_positions=runs, image_tokens=sum(e - s for s, e in runs),
                               images=[str(i) if isinstance(i, (str, Path)) else f"<{type(i).__name__}>"
                                       for i in sample.images],
                               pixel_shape=list(pixels.shape) if pixels is not None else None)
                except Exception as e:  # a bad sample is recorded, the others still dumped
                    rec["error"] = f"{type(e).__name__}: {e}"
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    return n
