"""Pick G, the largest context, the largest batch and the fewest GPUs: exact integer searches against the budget.

Everything is per GPU. For one choice of G (KV heads), KV dtype, engine and tensor-parallel size ``tp``::

    KV(ctx, batch) = the engine's per-GPU cache for ``batch`` sequences of ``ctx`` tokens   (engines.py)
    weights        = weight_bytes(read, kv_heads=G).bytes_per_gpu(tp)     (the K/V projections shrink with G)
    KV budget      = ceil(usable x utilization) - weights - reserve      (gpus.budget)
    fits           = KV(ctx, batch) <= KV budget

``KV`` is monotone non-decreasing in ``ctx`` and in ``batch``, so every "largest that fits" answer is an exact
search on integers, and "fewest GPUs" is a scan over the tensor-parallel sizes the model allows (per-GPU weights
and KV never grow with tp, so the first one that fits is the answer).

The hot path is :class:`KvCost`. It costs one sequence per context (batch 1) and, when the engine is
``linear_in_batch``, multiplies by the batch (exact: every layer's slots and state scale with the batch). For an
engine that assembles its estimate from per-layer costs (it keeps :meth:`Engine.estimate
<kvplan.engines.Engine.estimate>`), it sums ``engine.layer_cost`` over groups of identical layers instead of
building a whole :class:`~kvplan.engines.EngineEstimate` with its explanation; other engines (vLLM's hybrid
groups) are asked for their estimate. Searches gallop from an affine guess and then bisect, memoizing every
cost, so a whole sweep costs a few thousand integer evaluations.

Quality of a G (Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
Checkpoints", arXiv:2305.13245): G = H is multi-head attention; 1 < G < H is grouped-query attention, close to
MHA quality for groups of up to about 8 query heads per KV head, reached from an MHA checkpoint by mean-pooling
the K/V heads of each group and uptraining on about 5% of the pretraining compute; G = 1 is multi-query
attention, with a measurable quality loss on harder tasks.
"""

from __future__ import annotations

from kvplan.solver.fitting import BatchAnswer, CtxAnswer, FitCheck, FitReport, GpusAnswer, fit, fit_for_layout
from kvplan.solver.pickg import (
    Chart,
    ChartSeries,
    GChoice,
    GOption,
    Lever,
    PickGCell,
    PickGReport,
    Way,
    pick_g,
    pick_g_for_layout,
)
from kvplan.solver.scenario import Scenario, load_scenario
from kvplan.solver.search import BATCH_CAP, CTX_CAP, KvCost
from kvplan.solver.shared import (
    GQA_PAPER,
    QUALITY_LEGEND,
    SAFE_GROUP,
    allowed_tp,
    engine_options,
    quality_label,
    quality_note,
    select_gpu,
    tensor_parallel,
)

__all__ = [
    "BATCH_CAP",
    "CTX_CAP",
    "GQA_PAPER",
    "QUALITY_LEGEND",
    "SAFE_GROUP",
    "BatchAnswer",
    "Chart",
    "ChartSeries",
    "CtxAnswer",
    "FitCheck",
    "FitReport",
    "GChoice",
    "GOption",
    "GpusAnswer",
    "KvCost",
    "Lever",
    "PickGCell",
    "PickGReport",
    "Scenario",
    "Way",
    "allowed_tp",
    "engine_options",
    "fit",
    "fit_for_layout",
    "load_scenario",
    "pick_g",
    "pick_g_for_layout",
    "quality_label",
    "quality_note",
    "select_gpu",
    "tensor_parallel",
]
