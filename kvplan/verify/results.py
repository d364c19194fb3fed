"""What verify reports: checks, measurements, timings, probes, per plan and for the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvplan.errors import Param, spell
from kvplan.units import exact_and_human, human_bytes

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Check:
    """One prediction set against the device. ``ok`` False means the prediction is refuted."""

    name: str
    plan: str
    #: "cache_bytes" | "nominal_bytes" | "fits" | "max_batch"
    kind: str
    predicted_bytes: int
    measured_bytes: int
    ok: bool
    detail: str

    @property
    def difference_bytes(self) -> int:
        """measured - predicted."""
        return self.measured_bytes - self.predicted_bytes


@dataclass(frozen=True)
class OutOfMemory:
    """Where an allocation ran out of memory: the device's error, or the software cap (``max_bytes``)."""

    #: The layer whose tensor failed; None when the weights themselves did not fit.
    layer: int | None
    layer_kind: str
    tensor: str
    requested_bytes: int
    #: What verify held when it failed (weights + cache tensors so far).
    allocated_bytes: int
    #: The cap that was hit, or the device's free memory when the plan began.
    limit_bytes: int | None
    #: "max_bytes" (the software cap) or "device".
    source: str
    message: str

    def describe(self) -> str:
        where = "the weights" if self.layer is None else f"layer {self.layer} ({self.layer_kind})"
        limit = f" of the {exact_and_human(self.limit_bytes)} limit" if self.limit_bytes is not None else ""
        cap = f"the {spell(Param.MAX_BYTES)} cap" if self.source == "max_bytes" else "the device"
        return (
            f"out of memory at {where}, tensor {self.tensor} ({human_bytes(self.requested_bytes)}), "
            f"with {exact_and_human(self.allocated_bytes)} already held{limit} ({cap})"
        )


@dataclass(frozen=True)
class MemoryMeasure:
    """What one plan's allocation measured (weights + cache, all tensors alive)."""

    #: Sum of numel x element_size over the cache tensors.
    cache_tensor_bytes: int
    weights_bytes: int
    #: Sum of untyped_storage().nbytes() over every tensor (weights included).
    storage_bytes: int
    tensors: int
    #: CUDA / MPS: allocator-reported bytes after minus before (None on CPU).
    allocated_delta: int | None
    #: CUDA: memory_reserved after minus before; MPS: driver-allocated memory after minus before.
    reserved_delta: int | None
    #: CPU: growth of the process's resident memory (/proc/self/statm) while allocating and writing.
    resident_delta: int | None
    #: The same, in words, for the report.
    notes: tuple[str, ...] = ()

    @property
    def allocator_rounding_bytes(self) -> int | None:
        """Allocator bytes beyond the tensors' storage (None where the device has no allocator counter)."""
        return None if self.allocated_delta is None else self.allocated_delta - self.storage_bytes


@dataclass(frozen=True)
class LayerResult:
    index: int
    kind: str
    predicted_bytes: int
    measured_bytes: int
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class TimingResult:
    """One decode step of scaled-dot-product attention over every timed layer of the allocated cache."""

    plan: str
    kv_heads: int | None
    layers: int
    batch: int
    tokens: int
    #: K and V bytes one step reads.
    cache_bytes_read: int
    median_seconds: float | None
    repeats: int
    warmup: int
    achieved_bytes_per_second: float | None
    #: The catalog's memory bandwidth for this device (None on CPU or when the catalog has no figure).
    catalog_bytes_per_second: float | None
    note: str = ""


@dataclass(frozen=True)
class ProbeResult:
    """The largest batch that really fits at the plan's ctx, beside the largest the prediction allows."""

    plan: str
    ctx: int
    #: Memory the cache could use during the probe (after the weights): min(free, cap - weights).
    memory_bytes: int
    weights_bytes: int
    predicted_max_batch: int
    predicted_bytes: int
    measured_max_batch: int
    #: Cache tensor bytes of the largest batch that fitted (0 when none did).
    measured_bytes: int
    #: (batch, fitted) in the order tried: doubling, then bisection.
    trials: tuple[tuple[int, bool], ...]
    note: str = ""


@dataclass(frozen=True)
class PlanResult:
    """One plan on the device."""

    name: str
    model: str
    engine: str
    ctx: int
    batch: int
    kv_heads: int | None
    kv_dtype: str
    note: str
    #: The engine estimate's per_gpu_bytes (sum of the largest stage's LayerCost.total).
    predicted_bytes: int
    #: Bytes of the cache tensors as planned (torch element sizes x shapes), allocated or not.
    planned_bytes: int
    weights_bytes: int
    #: min(device free memory when the plan began, the cap less what verify already held).
    available_bytes: int
    predicted_fits: bool
    fits: bool
    out_of_memory: OutOfMemory | None
    measured: MemoryMeasure | None
    layers: tuple[LayerResult, ...]
    timing: TimingResult | None = None
    probe: ProbeResult | None = None


@dataclass(frozen=True)
class CatalogComparison:
    """The device's total memory beside the catalog entry for it."""

    gpu_id: str
    gpu_name: str
    catalog_usable_bytes: int | None
    device_total_bytes: int
    #: device total - catalog usable_bytes (None when the entry has no usable_bytes).
    difference_bytes: int | None
    #: The catalog line(s) that should change, or "" when none should.
    suggestion: str
    bandwidth_tbps: float | None


@dataclass(frozen=True)
class DeviceInfo:
    """The device verify runs on, and the memory it may use."""

    #: "cuda:0", "cpu", "mps".
    device: str
    kind: str
    name: str
    torch_version: str
    total_bytes: int | None
    free_bytes: int | None
    #: The software cap (max_bytes, or the CPU default), None when only the device limits.
    cap_bytes: int | None
    cap_note: str
    #: min(free, cap): what a plan may use.
    available_bytes: int
    catalog: CatalogComparison | None
    catalog_note: str


@dataclass(frozen=True)
class VerifyReport:
    """Everything ``kvplan verify`` shows. ``ok``: every check held; ``refuted``: the checks that did not."""

    device: DeviceInfo
    plans: tuple[PlanResult, ...]
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def refuted(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def refuted_checks(self) -> tuple[Check, ...]:
        return self.refuted

    @property
    def timings(self) -> tuple[TimingResult, ...]:
        return tuple(p.timing for p in self.plans if p.timing is not None)

    @property
    def probes(self) -> tuple[ProbeResult, ...]:
        return tuple(p.probe for p in self.plans if p.probe is not None)
