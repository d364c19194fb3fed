"""How each serving engine stores the cache: ideal, vLLM, SGLang, llama.cpp, TensorRT-LLM, transformers.

``ideal`` is what the architecture must keep. Every other engine is one class below that states its rules in
one place: how many K/V heads each GPU holds under tensor parallelism, how many token slots a layer holds for a
batch (pages, cells, padding, windows), what a fixed-state layer costs, and how the engine turns a memory
budget into blocks / tokens / concurrency (``capacity``). Each rule cites the engine source it follows; the
shared reference (docs/engines.md in the README) has one worked example per engine.

All figures are exact integers. A result keeps the per-layer costs of every pipeline stage, so it can report
the largest GPU and the whole deployment, and explain what the engine adds over ``ideal`` and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from kvplan.errors import OptionError
from kvplan.formula import (
    CacheEstimate,
    CacheTypes,
    Explanation,
    Factor,
    KindBreakdown,
    Product,
    check_positive,
    estimate,
    resolve_types,
    state_bytes,
    token_bytes,
)
from kvplan.layout import CacheLayout, LayerKind, LayerSpec, StateTensor

ENGINES = ("ideal", "vllm", "sglang", "llama.cpp", "trtllm", "hf")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ----------------------------------------------------------------------------------------------------------
# Options and results


@dataclass(frozen=True)
class EngineOptions:
    """Engine knobs, named as the engines name them. None = the engine's default (stated in the output)."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    #: vLLM --block-size / TensorRT-LLM tokens_per_block / SGLang --page-size.
    block_size: int | None = None
    #: vLLM --max-num-batched-tokens (sliding and chunked layers keep this many extra tokens).
    max_num_batched_tokens: int | None = None
    #: llama.cpp -ub / --ubatch-size and --swa-full.
    n_ubatch: int = 512
    swa_full: bool = False


@dataclass(frozen=True)
class LayerCost:
    """One layer's cache on one GPU, for the whole batch."""

    spec: LayerSpec  # as held by one GPU (heads after tensor parallelism)
    #: Token slots held for the whole batch (pages x block size, cells ...).
    slots: int
    slot_bytes: int
    #: Fixed bytes for the whole batch (SSM / linear-attention state).
    fixed_bytes: int
    #: How ``slots`` / ``fixed_bytes`` came about, in words with numbers.
    how: str = ""

    @property
    def total(self) -> int:
        return self.slots * self.slot_bytes + self.fixed_bytes


@dataclass(frozen=True)
class EngineEstimate:
    """A layout costed under one engine's rules, for ``batch`` sequences of ``ctx`` tokens."""

    engine: str
    ideal: CacheEstimate
    types: CacheTypes
    ctx: int
    batch: int
    tp: int
    pp: int
    #: Per pipeline stage, the layers one GPU of that stage holds.
    stages: tuple[tuple[LayerCost, ...], ...]
    #: The engine rules that applied here, in words.
    rules: tuple[str, ...]
    #: Extra engine facts (block size, pages per sequence ...) for display and JSON.
    facts: dict[str, int] = field(default_factory=dict)

    @property
    def stage_bytes(self) -> tuple[int, ...]:
        return tuple(sum(c.total for c in stage) for stage in self.stages)

    @property
    def per_gpu_bytes(self) -> int:
        """The largest GPU: the stage with the most cache."""
        return max(self.stage_bytes)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def deployment_bytes(self) -> int:
        """Every GPU together (replicated heads and latents counted on each rank)."""
        return sum(self.stage_bytes) * self.tp

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token slot costs across the deployment (every rank of every stage)."""
        return sum(c.slot_bytes for stage in self.stages for c in stage) * self.tp

    @property
    def largest_stage(self) -> tuple[LayerCost, ...]:
        sizes = self.stage_bytes
        return self.stages[sizes.index(max(sizes))]

    def breakdown(self) -> tuple[KindBreakdown, ...]:
        """Per layer kind, for one GPU of the largest stage."""
        out = []
        for kind in LayerKind:
            costs = [c for c in self.largest_stage if c.spec.kind is kind]
            if costs:
                total = sum(c.total for c in costs)
                out.append(
                    KindBreakdown(
                        kind=kind,
                        layers=len(costs),
                        bytes_per_token=sum(c.slot_bytes for c in costs),
                        tokens_held=max(c.slots for c in costs),
                        state_bytes_per_sequence=sum(c.fixed_bytes for c in costs) // self.batch,
                        bytes_per_sequence=total // self.batch,
                        total_bytes=total,
                    )
                )
        return tuple(out)

    def explanation(self) -> Explanation:
        """One line per group of identical layer costs on one GPU of the largest stage."""
        groups: dict[tuple[object, ...], list[LayerCost]] = {}
        for cost in self.largest_stage:
            key = (cost.spec.signature(), cost.slots, cost.slot_bytes, cost.fixed_bytes, cost.how)
            groups.setdefault(key, []).append(cost)
        lines = []
        for costs in groups.values():
            c = costs[0]
            label = f"{len(costs)} {c.spec.kind.value.replace('_', ' ')} layer{'s' if len(costs) > 1 else ''}"
            n = Factor(len(costs), "layers")
            factors: tuple[Factor, ...] = (n, Factor(c.total, "B"))
            if c.slots and not c.fixed_bytes:
                factors = (n, Factor(c.slots, "token slots"), Factor(c.slot_bytes, "B per slot"))
            lines.append(Product(label, factors, len(costs) * c.total, c.how))
        total = sum(line.result for line in lines)
        return Explanation(lines=tuple(lines), total=total, notes=self.rules)


# ----------------------------------------------------------------------------------------------------------
# Shared pieces


def split_layers(layers: Sequence[LayerSpec], pp: int) -> tuple[tuple[LayerSpec, ...], ...]:
    """Contiguous pipeline stages as vLLM's get_pp_indices makes them (vllm/distributed/utils.py): every stage
    gets L // pp layers and the remainder goes one each to the stages before the last, counting back from the
    second-to-last (the last stage also holds the LM head)."""
    n = len(layers)
    if pp > n:
        raise OptionError("--pipeline-parallel-size", f"{pp} stages for {n} layers; at most {n}")
    sizes = [n // pp] * pp
    for i in range(2, n % pp + 2):
        sizes[-i] += 1
    stages, start = [], 0
    for size in sizes:
        stages.append(tuple(layers[start : start + size]))
        start += size
    return tuple(stages)


def heads_per_rank(kv_heads: int, tp: int) -> int:
    """K/V heads one tensor-parallel rank holds: H_kv / tp, or one full copy of a head when tp > H_kv.

    vLLM (ModelConfig.get_num_kv_heads: max(1, total // tp)), SGLang (get_num_kv_heads) and TensorRT-LLM's
    allocator replicate heads when there are fewer heads than ranks, so total KV memory grows with tp.
    """
    return max(1, kv_heads // tp)


def check_tp(layout: CacheLayout, tp: int) -> None:
    """Tensor parallelism must split the query heads evenly and split or replicate the KV heads evenly."""
    for layer in layout.layers:
        if layer.q_heads and layer.q_heads % tp:
            raise OptionError(
                "--tensor-parallel-size", f"{tp} does not divide the {layer.q_heads} query heads of {layout.model}"
            )
        if layer.kind.has_kv_heads:
            h = layer.k_heads
            if (h >= tp and h % tp) or (h < tp and tp % h):
                raise OptionError(
                    "--tensor-parallel-size",
                    f"{tp} ranks cannot share {h} KV heads evenly (need tp | {h} or {h} | tp)",
                )


def shard_state(tensor: StateTensor, tp: int) -> StateTensor:
    # Linear-attention and Mamba states split their first axis (heads or channels) across tensor-parallel ranks.
    first, *rest = tensor.shape
    return replace(tensor, shape=(cdiv(first, tp), *rest))


def shard(layer: LayerSpec, tp: int) -> LayerSpec:
    """What one tensor-parallel rank holds of a layer. An MLA latent is one shared head: kept whole."""
    if tp == 1:
        return layer
    if layer.kind.has_kv_heads:
        h = heads_per_rank(layer.k_heads, tp)
        return replace(layer, q_heads=layer.q_heads // tp, k_heads=h, v_heads=heads_per_rank(layer.v_heads, tp))
    if layer.kind is LayerKind.STATE:
        return replace(layer, state=tuple(shard_state(t, tp) for t in layer.state))
    return layer


def tp_rule(layout: CacheLayout, tp: int) -> list[str]:
    if tp == 1:
        return []
    rules = []
    heads = {layer.k_heads for layer in layout.attention_layers}
    for h in sorted(heads):
        if tp > h:
            rules.append(
                f"tp {tp} > {h} KV heads: every rank keeps one full head, so the {h} heads are copied {tp // h}x "
                "across the ranks"
            )
        else:
            rules.append(f"tp {tp}: each rank holds {h // tp} of the {h} KV heads")
    if any(layer.kind is LayerKind.MLA for layer in layout.layers):
        rules.append(
            f"MLA: the latent is one shared head, kept whole on every one of the {tp} ranks (tp does not shrink it)"
        )
    return rules


# ----------------------------------------------------------------------------------------------------------
# Engines


class Engine:
    """The ideal accounting: what the architecture must keep. Subclasses override the rules that differ."""

    name = "ideal"
    summary = "what the architecture must keep: windows capped at the window, no paging, no padding"
    #: Whether --tensor-parallel-size means anything for this engine (pipeline stages always split layers).
    shards_heads = True
    #: Engines that run in one process accept neither tp nor pp.
    single_process = False
    #: True when ``batch`` sequences cost exactly ``batch`` times one sequence (every engine but llama.cpp, whose
    #: unified cache pads ctx x batch as a whole). Solvers use it to avoid recomputing per batch.
    linear_in_batch = True

    # -- rules, per layer (override what differs) ------------------------------------------------------------

    def cache_types(self, layout: CacheLayout, kv_cache_dtype: str, k: str | None, v: str | None) -> CacheTypes:
        return resolve_types(layout, kv_cache_dtype, k_dtype=k, v_dtype=v)

    def prepare(self, layout: CacheLayout) -> tuple[LayerSpec, ...]:
        """The layers as this engine stores them (before tensor parallelism)."""
        return layout.layers

    def shard(self, layer: LayerSpec, tp: int) -> LayerSpec:
        return shard(layer, tp)

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        """Token slots this layer holds for ``batch`` sequences of ``ctx`` tokens, and how."""
        held = layer.tokens_held(ctx)
        how = ""
        if layer.window is not None and layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED):
            how = f"min(ctx {ctx:,}, {'window' if layer.kind is LayerKind.SLIDING else 'chunk'} {layer.window:,})"
        return held * batch, how

    def slot_bytes(self, layer: LayerSpec, types: CacheTypes) -> int:
        return token_bytes(layer, types)

    def fixed_bytes(self, layer: LayerSpec, types: CacheTypes) -> int:
        """Fixed bytes per sequence (SSM / linear-attention state)."""
        return state_bytes(layer, types)

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        return []

    def facts(self, layout: CacheLayout, ctx: int, opts: EngineOptions) -> dict[str, int]:
        return {}

    # -- assembly ----------------------------------------------------------------------------------------------

    def layer_cost(self, layer: LayerSpec, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions) -> LayerCost:
        slots, how = self.slots(layer, ctx, batch, opts)
        fixed = self.fixed_bytes(layer, types)
        if fixed and not how:
            how = "one fixed state per sequence"
        return LayerCost(layer, slots, self.slot_bytes(layer, types) if slots else 0, fixed * batch, how)

    def stage_layers(self, layout: CacheLayout, opts: EngineOptions) -> tuple[tuple[LayerSpec, ...], ...]:
        """Per pipeline stage, the layers one GPU holds (heads already split by tensor parallelism)."""
        tp = opts.tensor_parallel_size
        return tuple(
            tuple(self.shard(layer, tp) for layer in stage)
            for stage in split_layers(self.prepare(layout), opts.pipeline_parallel_size)
        )

    def validate(self, layout: CacheLayout, opts: EngineOptions) -> None:
        tp = check_positive("--tensor-parallel-size", opts.tensor_parallel_size)
        pp = check_positive("--pipeline-parallel-size", opts.pipeline_parallel_size)
        if self.single_process and (tp > 1 or pp > 1):
            raise OptionError("--tensor-parallel-size", f"--engine {self.name} runs in one process: use 1")
        if tp > 1 and not self.shards_heads:
            raise OptionError(
                "--tensor-parallel-size", f"--engine {self.name} splits layers, not heads: use --pipeline-parallel-size"
            )
        check_tp(layout, tp)
        for name in ("block_size", "max_num_batched_tokens"):
            value = getattr(opts, name)
            if value is not None:
                check_positive("--" + name.replace("_", "-"), value)
        check_positive("--ubatch-size", opts.n_ubatch)

    def estimate(
        self,
        layout: CacheLayout,
        ctx: int,
        batch: int,
        *,
        kv_cache_dtype: str = "auto",
        k_dtype: str | None = None,
        v_dtype: str | None = None,
        opts: EngineOptions | None = None,
    ) -> EngineEstimate:
        opts = opts or EngineOptions()
        check_positive("--ctx", ctx)
        check_positive("--batch", batch)
        self.validate(layout, opts)
        types = self.cache_types(layout, kv_cache_dtype, k_dtype, v_dtype)
        stages = tuple(
            tuple(self.layer_cost(layer, ctx, batch, types, opts) for layer in stage)
            for stage in self.stage_layers(layout, opts)
        )
        return EngineEstimate(
            engine=self.name,
            ideal=estimate(layout, ctx, batch, types),
            types=types,
            ctx=ctx,
            batch=batch,
            tp=opts.tensor_parallel_size,
            pp=opts.pipeline_parallel_size,
            stages=stages,
            rules=(*tp_rule(layout, opts.tensor_parallel_size), *self.rules(layout, ctx, batch, opts)),
            facts=self.facts(layout, ctx, opts),
        )


class HFEngine(Engine):
    """Hugging Face transformers 5.x DynamicCache, exactly the tensors it holds after a forward pass.

    Rules (transformers/cache_utils.py and the model files, read at 5.23.0; checked by tests/test_oracle.py):
    - dtype: K/V in the model's own dtype (an fp32 config stays fp32: from_pretrained loads dtype "auto").
    - full layers (DynamicLayer): every token, [batch, kv_heads, seq, head_dim] for K and for V.
    - sliding and chunked layers (DynamicSlidingWindowLayer; Llama 4's chunked layers too): the last
      sliding_window - 1 tokens (window = attention_chunk_size for chunked layers).
    - MLA (DeepSeek V2/V3, Kimi-K2 as deepseek_v3): keys = the kv_lora_rank latent, values = the rope key, one
      head; V3.2 adds indexer_keys [batch, seq, index_head_dim].
    - linear attention / Mamba (LinearAttentionLayer): conv_states [batch, conv_dim, kernel] in the model dtype
      (the whole kernel, not kernel - 1) and recurrent_states in float32 (the torch kernels keep the state in
      fp32: Qwen3-Next / Qwen3.5 GatedDeltaNet, Nemotron-H Mamba2).
    - Falcon with the new decoder architecture (Falcon-40B) broadcasts K/V to all query heads before caching
      (models/falcon/modeling_falcon.py: num_kv_heads = num_heads if new_decoder_architecture).
    """

    name = "hf"
    summary = "transformers DynamicCache: sliding layers keep window - 1 tokens, fp32 recurrent state"
    single_process = True

    def cache_types(self, layout: CacheLayout, kv_cache_dtype: str, k: str | None, v: str | None) -> CacheTypes:
        return resolve_types(layout, kv_cache_dtype, k_dtype=k, v_dtype=v, keep_fp32=True)

    @staticmethod
    def broadcasts_heads(layout: CacheLayout) -> bool:
        return layout.family == "RefinedWeb" or (
            layout.family == "falcon" and bool(layout.raw.get("new_decoder_architecture"))
        )

    def prepare(self, layout: CacheLayout) -> tuple[LayerSpec, ...]:
        layers = []
        for layer in layout.layers:
            if self.broadcasts_heads(layout) and layer.kind.has_kv_heads:
                layer = replace(layer, k_heads=layer.q_heads, v_heads=layer.q_heads)
            if layer.kind is LayerKind.STATE:
                layer = replace(
                    layer,
                    state=tuple(
                        replace(t, shape=(t.shape[0], t.shape[1] + 1))
                        if t.name == "conv"
                        else replace(t, dtype="float32")
                        for t in layer.state
                    ),
                )
            layers.append(layer)
        return tuple(layers)

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        if layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED) and layer.window is not None:
            return min(ctx, layer.window - 1) * batch, f"min(ctx {ctx:,}, window {layer.window:,} - 1)"
        return super().slots(layer, ctx, batch, opts)

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = []
        if any(layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED) for layer in layout.layers):
            out.append("sliding / chunked layers keep the last window - 1 tokens (DynamicSlidingWindowLayer)")
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            out.append("linear-attention / SSM layers: conv state of the whole kernel, recurrent state in float32")
        if layout.dtype == "float32":
            out.append("K/V in float32: transformers keeps the checkpoint's dtype (pass --kv-cache-dtype to change)")
        if self.broadcasts_heads(layout):
            out.append("Falcon new decoder architecture: K/V broadcast to every query head before caching")
        return out


ENGINE_CLASSES: dict[str, type[Engine]] = {"ideal": Engine, "hf": HFEngine}


def get_engine(name: str) -> Engine:
    key = name.strip().lower()
    aliases = {
        "transformers": "hf",
        "llamacpp": "llama.cpp",
        "llama-cpp": "llama.cpp",
        "tensorrt-llm": "trtllm",
        "trt-llm": "trtllm",
    }
    key = aliases.get(key, key)
    if key not in ENGINE_CLASSES:
        raise OptionError("--engine", f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_CLASSES)}")
    return ENGINE_CLASSES[key]()
