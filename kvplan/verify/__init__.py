"""Check a plan on a real torch device: allocate the cache an engine would hold and compare bytes exactly.

For every plan (a layout, ctx, batch, KV dtype and engine) this module

1. builds the tensors the engine stores, layer by layer, from the layer specs alone (:func:`cache_tensors`):
   transformers / ideal ``[batch, kv_heads, seq, head_dim]`` for K and for V (MLA: keys ``[batch, 1, seq,
   kv_lora_rank]``, values ``[batch, 1, seq, rope]``); vLLM pages ``[2, num_blocks, block_size, kv_heads,
   head_dim]`` (FlashAttention), MLA ``[num_blocks, block_size, latent]``, state ``[pages, *state]``; llama.cpp
   rows ``[cells, heads x head_dim]``; SGLang token pools; TensorRT-LLM blocks. Block-scaled or scaled types
   (q8_0, nvfp4, ``*_per_token_head``, fp8_ds_mla) are uint8 rows of their exact byte size;
2. allocates them (weights first, when the plan carries weight bytes), writes into every byte so the memory is
   committed, and measures: tensor bytes, storage bytes, and the allocator (CUDA / MPS) or the process's
   resident memory (CPU) before and after;
3. checks that the tensor bytes equal the engine estimate's ``per_gpu_bytes`` exactly, that a plan predicted
   to fit does fit and one predicted not to fit runs out of memory (which layer, how far it got), and,
   optionally, probes the largest batch that really fits and times one decode step of attention.

Allocator rounding, reserve and resident memory are reported beside the comparison, never folded into it.
``max_bytes`` is a software cap on what verify allocates: passing it raises the same out-of-memory result as
the device would, so the out-of-memory and probe paths run on a CPU with small shapes.

A tensor- or pipeline-parallel plan runs on real ranks of torch.distributed (:func:`run_ranks`, in
:mod:`kvplan.verify.ranks`; the processes in :mod:`kvplan.verify.launch`): each rank allocates and checks its
own share. :func:`save_gpu` keeps what a CUDA run measured as a ``measured`` entry of the user's GPU file.

torch is imported inside the functions that need it (:func:`import_torch`), never at module import: kvplan
works without it, and ``kvplan verify`` says how to install it (``pip install ".[verify]"``). Nothing here prints.
"""

from __future__ import annotations

from kvplan.verify import (
    arena,
    common,
    device,
    entry,
    launch,
    measure,
    plans,
    probe,
    ranks,
    results,
    runner,
    tensors,
    timing,
)
from kvplan.verify.arena import FILL_BYTE
from kvplan.verify.common import GiB, MiB, ProgressCallback, import_torch
from kvplan.verify.device import compare_catalog, open_device, parse_device
from kvplan.verify.entry import run_verify, self_check
from kvplan.verify.measure import measure_gpu, save_gpu
from kvplan.verify.plans import (
    HEADROOM,
    LLAMA2_7B,
    LLAMA2_13B,
    VerifyPlan,
    auto_device,
    plan_for_model,
    predict,
    scale_to_fit,
    self_check_plans,
)
from kvplan.verify.ranks import RankResult, RankShare, RanksReport, rank_shares, run_ranks
from kvplan.verify.results import (
    CatalogComparison,
    Check,
    DeviceInfo,
    LayerResult,
    MemoryMeasure,
    OutOfMemory,
    PlanResult,
    ProbeResult,
    TimingResult,
    VerifyReport,
)
from kvplan.verify.tensors import ITEMSIZE, TORCH_DTYPES, LayerTensors, TensorSpec, cache_tensors, torch_dtype_name

__all__ = [
    "FILL_BYTE",
    "HEADROOM",
    "ITEMSIZE",
    "LLAMA2_7B",
    "LLAMA2_13B",
    "TORCH_DTYPES",
    "CatalogComparison",
    "Check",
    "DeviceInfo",
    "GiB",
    "LayerResult",
    "LayerTensors",
    "MemoryMeasure",
    "MiB",
    "OutOfMemory",
    "PlanResult",
    "ProbeResult",
    "ProgressCallback",
    "RankResult",
    "RankShare",
    "RanksReport",
    "TensorSpec",
    "TimingResult",
    "VerifyPlan",
    "VerifyReport",
    "arena",
    "auto_device",
    "cache_tensors",
    "common",
    "compare_catalog",
    "device",
    "entry",
    "import_torch",
    "launch",
    "measure",
    "measure_gpu",
    "open_device",
    "parse_device",
    "plan_for_model",
    "plans",
    "predict",
    "probe",
    "rank_shares",
    "ranks",
    "results",
    "run_ranks",
    "run_verify",
    "runner",
    "save_gpu",
    "scale_to_fit",
    "self_check",
    "self_check_plans",
    "tensors",
    "timing",
    "torch_dtype_name",
]
