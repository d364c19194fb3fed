"""The device: parse and open it, its memory, and how it compares with the GPU catalog."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from kvplan.errors import DeviceUnavailableError, OptionError, Param, UnknownGPUError, spell
from kvplan.units import exact_and_human

if TYPE_CHECKING:
    from kvplan.gpus import GpuEntry
from kvplan.verify.common import MiB, import_torch
from kvplan.verify.results import CatalogComparison, DeviceInfo

_DEVICE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def parse_device(text: str) -> tuple[str, int | None]:
    """``cuda`` / ``cuda:N`` / ``cpu`` / ``mps`` -> (kind, index)."""
    match = _DEVICE.match(text.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise OptionError(Param.DEVICE, f"expected cuda, cuda:N, cpu or mps; got {text!r}")
    index = match.group(2)
    return match.group(1), None if index is None else int(index)


def _open(torch: Any, text: str) -> tuple[Any, str]:
    """The torch.device for ``text`` after checking it exists, and its canonical name."""
    kind, index = parse_device(text)
    if kind == "cuda":
        if not torch.cuda.is_available():
            if getattr(torch.version, "cuda", None) is None:
                why = f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch"
            else:
                why = "CUDA is not available: no NVIDIA driver or GPU is visible to torch"
            raise DeviceUnavailableError(text, why)
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if index is None else index
        if index >= count:
            raise DeviceUnavailableError(
                text, f"there {'is' if count == 1 else 'are'} {count} CUDA device(s): 0-{count - 1}"
            )
        return torch.device("cuda", index), f"cuda:{index}"
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceUnavailableError(
                text, "MPS is not available (it needs Apple silicon, macOS 12.3+ and a torch built with MPS)"
            )
        return torch.device("mps"), "mps"
    return torch.device("cpu"), "cpu"


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _sysconf(name: str) -> int | None:
    try:
        pages, size = os.sysconf(name), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _resident_bytes() -> int | None:
    """The process's resident memory (Linux /proc/self/statm), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _memory(torch: Any, dev: Any) -> tuple[int | None, int | None]:
    """(total, free) bytes of the device: cudaMemGetInfo; MPS's recommended maximum less what the driver holds;
    CPU physical memory and MemAvailable."""
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        return int(total), int(free)
    if dev.type == "mps":
        total = int(torch.mps.recommended_max_memory())
        return total, max(0, total - int(torch.mps.driver_allocated_memory()))
    free = _meminfo("MemAvailable") or _sysconf("SC_AVPHYS_PAGES")
    return _sysconf("SC_PHYS_PAGES"), free


def _device_name(torch: Any, dev: Any) -> str:
    if dev.type == "cuda":
        return str(torch.cuda.get_device_name(dev))
    if dev.type == "mps":
        return "Apple MPS"
    import platform

    return platform.processor() or platform.machine() or "CPU"


def compare_catalog(entry: GpuEntry, total: int) -> CatalogComparison:
    """The device's torch total beside the entry's usable_bytes, and what the catalog line should become."""
    usable = entry.usable_bytes
    diff = None if usable is None else total - usable
    mib, whole = divmod(total, MiB)
    suggestion = ""
    if diff:
        at = f"configs/gpus.yaml (id {entry.id})"
        if whole == 0:
            torch_line = f"torch_total_mib_min: {mib} and usable_bytes: {total} (= {mib:,} x 2^20)"
        else:
            torch_line = f"usable_source: measured and usable_bytes: {total} (not a whole MiB)"
        if entry.usable_source == "torch":
            lo, hi = entry.torch_total_mib_min, entry.torch_total_mib_max
            if total < (usable or 0):
                suggestion = f"{at}: this device has less than the lowest torch total seen: {torch_line}"
            elif whole == 0 and (hi is None or mib > hi) and lo is not None:
                suggestion = f"{at}: torch_total_mib_max: {mib} (usable_bytes stays the lowest seen, {lo:,} MiB)"
        else:
            suggestion = (
                f"{at}: usable_source is {entry.usable_source!r}; a torch figure is better evidence: "
                f"usable_source: torch, {torch_line}"
            )
    return CatalogComparison(entry.id, entry.name, usable, total, diff, suggestion, entry.bandwidth_tbps)


def open_device(
    device: str = "cpu", *, max_bytes: int | None = None, gpu: str | None = None, cpu_cap: int | None = None
) -> DeviceInfo:
    """Import torch, check the device exists, read its memory and compare it with the GPU catalog.

    ``gpu`` names the catalog entry to compare with (default: the entry for torch's device name). On a CPU
    without ``max_bytes`` verify caps itself at half of MemAvailable (the kernel would kill the process, not
    raise, if it ran out), and at ``cpu_cap`` when that is smaller (the self-check's own size).
    """
    parse_device(device)
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise OptionError(Param.MAX_BYTES, f"must be a positive size, e.g. 3GiB; got {max_bytes!r}")
    torch = import_torch()
    dev, canonical = _open(torch, device)
    total, free = _memory(torch, dev)
    cap, cap_note = max_bytes, ""
    flag = spell(Param.MAX_BYTES)
    guard = (free or total or 0) // 2 if dev.type == "cpu" else None
    if max_bytes is not None and (guard is None or max_bytes <= guard):
        cap_note = f"{flag} {exact_and_human(max_bytes)}: a software cap on what verify allocates"
    elif guard is not None:
        # The guard stays under a larger --max-bytes: running out of RAM kills the process instead of raising.
        cap = guard
        if max_bytes is None:
            asked = f"no {flag} on a CPU: verify allocates at most half of the available RAM,"
        else:
            asked = (
                f"{flag} {exact_and_human(max_bytes)} is more than half of the available RAM: verify allocates at most"
            )
        cap_note = f"{asked} {exact_and_human(cap)} (running out of RAM kills the process instead of raising)"
        if max_bytes is None and cpu_cap is not None and cpu_cap < cap:
            cap = cpu_cap
            cap_note = (
                f"no {flag} on a CPU: the self-check allocates at most {exact_and_human(cap)}, enough for "
                f"every plan ({flag} sets another cap)"
            )
    limits = [x for x in (free, cap) if x is not None]
    available = min(limits) if limits else 0
    name = _device_name(torch, dev)
    comparison, catalog_note = None, ""
    if dev.type == "cuda" or gpu is not None:
        from kvplan.gpus import load_catalog

        catalog = load_catalog()
        entry = catalog.lookup(gpu if gpu is not None else name)
        if gpu is not None and entry is None:
            raise UnknownGPUError(gpu, catalog.suggestions(gpu))
        if entry is None:
            catalog_note = f"{name!r} is not in the GPU catalog: add it (kvplan gpus lists the catalog)"
        elif dev.type != "cuda" or total is None:
            catalog_note = f"{entry.id}: the device is {canonical}, so its memory is not compared with the catalog"
        else:
            comparison = compare_catalog(entry, total)
    else:
        catalog_note = f"{canonical}: not a catalog device (no memory or bandwidth figure to compare)"
    return DeviceInfo(
        device=canonical,
        kind=dev.type,
        name=name,
        torch_version=str(torch.__version__),
        total_bytes=total,
        free_bytes=free,
        cap_bytes=cap,
        cap_note=cap_note,
        available_bytes=available,
        catalog=comparison,
        catalog_note=catalog_note,
    )
