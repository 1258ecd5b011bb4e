"""The image size bounds a Qwen run really uses.

``--min-pixels/--max-pixels`` (or VLMEvalKit's defaults for the model) go to
``qwen_vl_utils``, which resizes each image into that range; the checkpoint's
image processor then resizes again into *its* own range (``min_pixels`` /
``max_pixels``, stored as ``size.shortest_edge`` / ``size.longest_edge``). A
requested bound outside the processor's range is therefore clamped: the
effective range is the intersection. This reads the processor's range (no
weights load) so that the setting file records the effective values and the
launch warns.
"""
from __future__ import annotations

from typing import Optional, Tuple


def processor_range(model_path: str) -> Optional[Tuple[Optional[int], Optional[int]]]:
    """(min_pixels, max_pixels) of the checkpoint's image processor, or None if it cannot be read."""
    try:
        from transformers import AutoImageProcessor
        ip = AutoImageProcessor.from_pretrained(model_path)
    except Exception:  # offline hub id not cached, no image processor: nothing to compare with
        return None
    size = getattr(ip, "size", None)

    def pick(*names):
        for obj in (size, ip):
            for n in names:
                v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
                if v:
                    return int(v)
        return None

    return pick("min_pixels", "shortest_edge"), pick("max_pixels", "longest_edge")


def effective(requested_min: Optional[int], requested_max: Optional[int], bounds, sources) -> Tuple[dict, list]:
    """({effective and requested values}, [warnings]) for the requested bounds and the processor's ``bounds``.

    ``sources``: {"min_pixels": "--min-pixels" or "VLMEvalKit's default", ...}, named in the warnings.
    """
    pmin, pmax = bounds if bounds else (None, None)
    # Nothing requested: qwen_vl_utils' own wide defaults apply, so the processor's bound decides.
    eff_min = requested_min if requested_min is not None else pmin
    eff_max = requested_max if requested_max is not None else pmax
    warnings = []
    if requested_max is not None and pmax is not None and requested_max > pmax:
        eff_max = pmax
        warnings.append(f"{sources['max_pixels']} {requested_max} is above what the checkpoint's image processor "
                        f"allows (max_pixels {pmax}); images are resized to at most {pmax} pixels")
    if requested_min is not None and pmin is not None and requested_min < pmin:
        eff_min = pmin
        warnings.append(f"{sources['min_pixels']} {requested_min} is below what the checkpoint's image processor "
                        f"allows (min_pixels {pmin}); images are resized to at least {pmin} pixels")
    if eff_min is not None and eff_max is not None and eff_min > eff_max:
        warnings.append(f"the effective min_pixels {eff_min} is above the effective max_pixels {eff_max}; "
                        f"the processor's max wins")
        eff_min = eff_max
    rec = {"requested_min_pixels": requested_min, "requested_max_pixels": requested_max,
           "processor_min_pixels": pmin, "processor_max_pixels": pmax,
           "min_pixels": eff_min, "max_pixels": eff_max}
    return rec, warnings
