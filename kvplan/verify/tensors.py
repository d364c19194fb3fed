"""The tensors an engine holds, layer by layer, from the layer specs alone (pure: no torch). Each engine states
its own layout (:meth:`Engine.stage_tensors <kvplan.engines.base.Engine.stage_tensors>`); this module picks the
plan's largest pipeline stage."""

from __future__ import annotations

from kvplan.engines import get_engine
from kvplan.engines.tensors import ITEMSIZE, TORCH_DTYPES, LayerTensors, TensorSpec, torch_dtype_name
from kvplan.verify.plans import VerifyPlan


def cache_tensors(plan: VerifyPlan) -> tuple[LayerTensors, ...]:
    """The tensors one GPU of the plan's pipeline stage (``plan.stage``, else the largest) holds, built from the
    layer specs and the engine's own rules (tokens, pages, cells), never from the estimate's byte figures."""
    engine = get_engine(plan.engine)
    engine.validate(plan.layout, plan.opts)
    types = engine.cache_types(plan.layout, plan.kv_cache_dtype, None, None)
    stages = [
        engine.stage_tensors(stage, plan.ctx, plan.batch, types, plan.opts)
        for stage in engine.stage_layers(plan.layout, plan.opts)
    ]
    if plan.stage is not None:
        return tuple(stages[plan.stage])
    sizes = [sum(layer.nbytes for layer in stage) for stage in stages]
    return tuple(stages[sizes.index(max(sizes))])


__all__ = ["ITEMSIZE", "TORCH_DTYPES", "LayerTensors", "TensorSpec", "cache_tensors", "torch_dtype_name"]
