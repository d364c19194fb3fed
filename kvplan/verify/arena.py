"""Allocation with a software cap: the arena, out-of-memory detection, allocator counters."""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from kvplan.verify.device import _memory, _resident_bytes
from kvplan.verify.results import OutOfMemory
from kvplan.verify.tensors import TensorSpec

#: The byte verify writes everywhere: a normal (not subnormal) value in every float type it allocates
#: (fp16 1.06, bf16 / fp32 0.0115, fp8 e4m3 1.5, e5m2 1.0), so timing never runs on denormals.
FILL_BYTE = 0x3C


class _OutOfMemoryError(Exception):
    def __init__(self, oom: OutOfMemory) -> None:
        super().__init__(oom.describe())
        self.oom = oom


def _is_oom(torch: Any, err: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),) if isinstance(t, type))
    if oom_types and isinstance(err, oom_types):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class _Arena:
    """Every tensor verify holds, the bytes they take, and the cap. ``release`` drops them all."""

    def __init__(self, torch: Any, dev: Any, cap: int | None, device_limit: int | None) -> None:
        self.torch = torch
        self.dev = dev
        self.cap = cap
        self.device_limit = device_limit
        self.tensors: list[torch.Tensor] = []
        self.layers: dict[int, dict[str, torch.Tensor]] = {}
        self.used = 0

    def allocate(self, spec: TensorSpec, layer: int | None, kind: str, *, write: bool) -> None:
        """Allocate ``spec`` (and write FILL_BYTE into every byte when ``write``), or raise _OutOfMemoryError.
        The new tensor is only ever referenced from the arena, so release() frees it even mid-interrupt."""
        torch = self.torch
        need = spec.nbytes
        if self.cap is not None and self.used + need > self.cap:
            raise _OutOfMemoryError(
                OutOfMemory(
                    layer,
                    kind,
                    spec.name,
                    need,
                    self.used,
                    self.cap,
                    "max_bytes",
                    f"{self.used:,} + {need:,} B would pass the {self.cap:,} B cap",
                )
            )
        try:
            self.tensors.append(torch.empty(spec.shape, dtype=getattr(torch, spec.dtype), device=self.dev))
        except Exception as err:
            if not _is_oom(torch, err):
                raise
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise _OutOfMemoryError(
                OutOfMemory(layer, kind, spec.name, need, self.used, self.device_limit, "device", first)
            ) from None
        if write:
            self.tensors[-1].view(torch.uint8).fill_(FILL_BYTE)
        if layer is not None:
            named = self.layers.setdefault(layer, {})
            key, n = spec.name, 1
            while key in named:  # vLLM's padding layers of several groups all sit at index -1
                n += 1
                key = f"{spec.name}#{n}"
            named[key] = self.tensors[-1]
        self.used += self.tensors[-1].nelement() * self.tensors[-1].element_size()

    def release(self, *, collect: bool = True) -> None:
        """Drop every reference and hand the memory back (``collect``: also run the cycle collector, ~0.1 s)."""
        self.tensors.clear()
        self.layers.clear()
        self.used = 0
        if collect:
            gc.collect()
        _empty_cache(self.torch, self.dev)


def _empty_cache(torch: Any, dev: Any) -> None:
    """Give freed memory back: the CUDA / MPS caching allocator's blocks, or on a CPU glibc's free heap pages
    (malloc_trim), so the next plan's measurements start from a clean slate."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
    elif dev.type == "mps":
        torch.mps.synchronize()
        torch.mps.empty_cache()
    else:
        _malloc_trim()


@cache
def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (looked up once: find_library may run ldconfig)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def _malloc_trim() -> None:
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


def _counters(torch: Any, dev: Any) -> tuple[int | None, int | None, int | None]:
    """(allocated, reserved, resident) now."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return int(torch.cuda.memory_allocated(dev)), int(torch.cuda.memory_reserved(dev)), None
    if dev.type == "mps":
        torch.mps.synchronize()
        return int(torch.mps.current_allocated_memory()), int(torch.mps.driver_allocated_memory()), None
    return None, None, _resident_bytes()


def _delta(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before


def _available(torch: Any, dev: Any, cap: int | None) -> tuple[int, int | None]:
    """(what a plan may use now, the device's free memory now)."""
    _, free = _memory(torch, dev)
    limits = [x for x in (free, cap) if x is not None]
    return (min(limits) if limits else 0), free
