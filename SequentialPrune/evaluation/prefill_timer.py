"""Wall-clock time of a model's prefill forward, from a forward pre/post hook pair.

The prefill is the call that starts from an empty KV cache (under ``generate``
the first call; with ``use_cache=False`` every call re-runs the whole sequence,
so each one counts and the first is the prompt's). On GPU both hooks
synchronize, so the time covers the kernels and not only their launch.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional

import torch


def _cache_len(pkv) -> int:
    if pkv is None:
        return 0
    get = getattr(pkv, "get_seq_length", None)
    return int(get()) if callable(get) else 0


class PrefillTimer:
    """Times every forward of ``model`` that starts from an empty cache until :meth:`remove`.

    Register it after ``apply_pruning`` so that its post-hook runs after the
    pruner's, and ``on_prefill(seconds, call_number)`` sees that prefill's stats.
    """

    def __init__(self, model: torch.nn.Module, on_prefill: Optional[Callable[[float, int], None]] = None):
        self.on_prefill = on_prefill
        self.times: List[float] = []
        self._t0: Optional[float] = None
        self._cuda = any(p.is_cuda for p in model.parameters())
        # prepend: the clock starts before the pruner's own pre-hook, so its work is timed too.
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True, prepend=True),
                         model.register_forward_hook(self._post, with_kwargs=True)]

    def reset(self) -> None:
        """Forget the times of the previous sample."""
        self.times.clear()
        self._t0 = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def _pre(self, module, args, kwargs):
        if _cache_len(kwargs.get("past_key_values")) == 0:
            self._sync()
            self._t0 = time.perf_counter()
        return None

    def _post(self, module, args, kwargs, output):
        if self._t0 is None:
            return None
        self._sync()
        dt = time.perf_counter() - self._t0
        self._t0 = None
        self.times.append(dt)
        if self.on_prefill is not None:
            self.on_prefill(dt, len(self.times))
        return None
