"""Count, on the CPU, the calls in SequentialPrune's own code that would stall a GPU: device-to-host reads
(``.item()``, ``.tolist()``, ``bool(t)``, ``.cpu()``, data-dependent shapes such as ``nonzero``) and
host-to-device copies of Python data (``torch.tensor(..., device=...)``). On CUDA each waits for the queued
kernels, so the CPU stops running ahead of the GPU; ``torch.cuda.set_sync_debug_mode`` shows the same on a GPU.
"""
from __future__ import annotations

import collections
import os
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import SequentialPrune

_READS = {"tolist", "item", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"}
_SHAPES = {"aten.nonzero.default", "aten.masked_select.default", "aten._unique2.default",
           "aten.unique_consecutive.default", "aten.repeat_interleave.Tensor"}


_PACKAGE = os.path.dirname(os.path.abspath(SequentialPrune.__file__)) + os.sep
_TESTING = os.path.join(_PACKAGE, "testing") + os.sep
_TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def _site():
    """``file:line`` of the calling code when it is SequentialPrune's own (the package, its test references
    left out), else None (the model's, generate's, a test's)."""
    for f in reversed(traceback.extract_stack()):
        path = os.path.abspath(f.filename)
        if path == os.path.abspath(__file__) or path.startswith(_TORCH):
            continue  # this counter, and torch's own dispatch layers
        if path.startswith(_PACKAGE) and not path.startswith(_TESTING):
            return f"{path[len(_PACKAGE):]}:{f.lineno}"
        return None
    return None


class _Calls(TorchFunctionMode):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _READS or (name in ("tensor", "as_tensor") and kwargs.get("device") is not None):
            site = _site()
            if site:
                self.seen[(name, site)] += 1
        return func(*args, **kwargs)


class _Ops(TorchDispatchMode):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        bool_index = str(func).startswith("aten.index.Tensor") and len(args) > 1 and any(
            getattr(a, "dtype", None) == torch.bool for a in args[1] if a is not None)
        if str(func) in _SHAPES or bool_index:
            site = _site()
            if site:
                self.seen[(str(func), site)] += 1
        return func(*args, **(kwargs or {}))


class HostSyncs:
    """``with HostSyncs() as s: ...``; then ``s.seen``: Counter of (call, SequentialPrune file:line)."""

    def __enter__(self):
        self.seen = collections.Counter()
        self._modes = [_Calls(self.seen), _Ops(self.seen)]
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.seen.values())
