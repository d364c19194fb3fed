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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from kvplan.dtypes import canonical_name
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
    #: llama.cpp --kv-unified: one cache stream shared by all sequences (the server's default with -np).
    kv_unified: bool = True
    #: vLLM --enable-prefix-caching (default on in 0.33): Mamba layers then keep their state in "align" mode.
    enable_prefix_caching: bool = True
    #: vLLM async scheduling (default on): two batches in flight, so sliding layers keep twice the batched tokens.
    async_scheduling: bool = True


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
            key = (cost.spec.signature(), cost.spec.index < 0, cost.slots, cost.slot_bytes, cost.fixed_bytes, cost.how)
            groups.setdefault(key, []).append(cost)
        lines = []
        for costs in groups.values():
            c = costs[0]
            label = f"{len(costs)} {c.spec.kind.value.replace('_', ' ')} layer{'s' if len(costs) > 1 else ''}"
            if c.spec.index < 0:
                label = "padding slots"
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

    #: The KV dtypes this engine offers (None: any kvplan knows).
    TYPES: tuple[str, ...] | None = None
    #: Whether K and V may use different dtypes (llama.cpp --cache-type-k / --cache-type-v).
    split_kv_types = True

    def cache_types(self, layout: CacheLayout, kv_cache_dtype: str, k: str | None, v: str | None) -> CacheTypes:
        if not self.split_kv_types and (k is not None or v is not None):
            raise OptionError("--cache-type-k", f"--engine {self.name} stores K and V in one --kv-cache-dtype")
        types = resolve_types(layout, kv_cache_dtype, k_dtype=k, v_dtype=v)
        if self.TYPES is not None:
            allowed_types(self.name, types, self.TYPES)
        return types

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

    def stage_costs(
        self, layout: CacheLayout, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> tuple[tuple[LayerCost, ...], ...]:
        """Per pipeline stage, what one GPU of that stage holds, layer by layer."""
        return tuple(
            tuple(self.layer_cost(layer, ctx, batch, types, opts) for layer in stage)
            for stage in self.stage_layers(layout, opts)
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
        stages = self.stage_costs(layout, ctx, batch, types, opts)
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


def fp8_indexer_token_bytes(layer: LayerSpec, types: CacheTypes) -> int:
    """Bytes per token of a layer whose DSA indexer keys are stored in fp8 with one fp32 scale per 128 values
    (DeepSeek-V3.2: index_head_dim + index_head_dim / 128 x 4 = 132 B), whatever the KV dtype: SGLang's
    _compute_dsa_indexer_cell_size and vLLM's indexer cache both keep them this way."""
    if layer.kind is LayerKind.MLA and layer.indexer_head_dim:
        latent = replace(layer, indexer_head_dim=0)
        return token_bytes(latent, types) + layer.indexer_head_dim + layer.indexer_head_dim // 128 * 4
    return token_bytes(layer, types)


def allowed_types(engine: str, types: CacheTypes, names: Sequence[str]) -> None:
    """Reject KV dtypes an engine does not offer (vLLM has no plain int8, llama.cpp no fp8 ...)."""
    for t in {types.k.name, types.v.name}:
        if t not in names:
            raise OptionError(
                "--kv-cache-dtype", f"--engine {engine} does not store KV as {t}; it offers: {', '.join(names)}"
            )


@dataclass(frozen=True)
class _VllmSpec:
    """What vLLM's KVCacheSpec for one layer boils down to: a page of `block` tokens (or one state)."""

    layer: LayerSpec
    block: int
    #: Bytes of one page in this layer (after padding to the unified page size).
    page: int


@dataclass(frozen=True)
class _VllmGroup:
    """One KV cache group: `size` layer slots sharing block ids (vllm/v1/core/kv_cache_planning.py)."""

    kind: LayerKind
    layers: tuple[_VllmSpec, ...]
    size: int

    @property
    def padding(self) -> int:
        return self.size - len(self.layers)


class VLLMEngine(Engine):
    """vLLM V1, as read in vLLM 0.33.0 (differences from 0.11.0 noted). Sources: vllm/v1/kv_cache_interface.py,
    vllm/v1/core/kv_cache_planning.py, vllm/v1/core/kv_cache_utils.py, vllm/config/model.py, vllm/config/vllm.py,
    vllm/platforms/interface.py, vllm/model_executor/layers/mamba/mamba_utils.py.

    - Pages: one layer's page is block_size tokens x KV heads per rank x (K dim + V dim) x bytes (MLA: one
      latent head, no V; fp8_ds_mla 656 B per token). KV heads per rank: max(1, H_kv // tp); MLA: 1 on every rank.
    - Per request, a layer reserves (max_memory_usage_bytes): full / MLA cdiv(len, B) pages; sliding
      cdiv(min(W - 1 + in_flight, len), B) + 1 pages (the +1 for a window that does not start on a block boundary);
      chunked local cdiv(min(chunk + in_flight, len), B); in_flight = max_num_batched_tokens x batches in flight
      (2 with async scheduling, the default at pp = 1; 1 in vLLM <= 0.11); Mamba / linear attention 2 (+1 for a
      Mamba2 prefill checkpoint) pages in prefix-caching "align" mode (the default), 1 page without prefix caching.
    - Hybrid models: the attention block is raised so one attention page holds a Mamba state:
      block = 16 x cdiv(mamba_page, 16 x attention_bytes_per_token), and the Mamba page is padded to it
      (Platform._align_hybrid_block_size); attention pages of different sizes are unified by scaling block sizes.
    - Groups: layers of one spec form one group; hybrid specs form groups of G layers, G = the rarest spec's count
      (or the commonest when within 1.5x of it); a spec with n layers fills cdiv(n, G) groups and the empty slots
      are "padding layers" that still take memory. A block id spans all G slots of a group.
    - Capacity: num_blocks = kv_memory // bytes_per_block (G pages); max concurrency = num_blocks / pages one
      request of max_model_len needs across groups; "GPU KV cache size" = int(concurrency x max_model_len).
    """

    name = "vllm"
    summary = "vLLM V1 paged cache (0.33): block_size pages per layer, heads max(1, H_kv // tp), groups"
    DEFAULT_BLOCK = 16
    #: vllm serve on a >= 70 GiB GPU other than A100 (engine/arg_utils.py get_batch_defaults); 2048 on smaller GPUs.
    DEFAULT_BATCHED_TOKENS = 8192
    split_kv_types = False
    TYPES = (
        "float16",
        "bfloat16",
        "float32",
        "fp8_e4m3",
        "fp8_e5m2",
        "int8_per_token_head",
        "fp8_per_token_head",
        "nvfp4",
        "fp8_ds_mla",
    )

    def block_size(self, opts: EngineOptions) -> int:
        return opts.block_size or self.DEFAULT_BLOCK

    def in_flight(self, opts: EngineOptions) -> int:
        batched = opts.max_num_batched_tokens or self.DEFAULT_BATCHED_TOKENS
        pp = opts.pipeline_parallel_size
        batches = (2 if pp == 1 else pp) if opts.async_scheduling else pp
        return batched * batches

    def state_layer(self, layer: LayerSpec, layout: CacheLayout) -> LayerSpec:
        # Mamba state dtypes (MambaStateDtypeCalculator): conv in the model dtype; the SSM state in the model dtype
        # too unless the model's config hook sets it: Nemotron-H mamba_ssm_cache_dtype (float32 by default),
        # Qwen3.5 mamba_ssm_dtype. Qwen3-Next has no hook: bf16. Our layout carries exactly those config values.
        return layer

    def pages_per_request(self, layer: LayerSpec, block: int, ctx: int, opts: EngineOptions) -> int:
        if layer.kind is LayerKind.STATE:
            if not opts.enable_prefix_caching:
                return 1
            # align mode: 2 pages + 1 prefill checkpoint for the Mamba2 mixer (mamba_mixer2.py); GDN has none.
            return 3 if any(t.name == "ssm" for t in layer.state) else 2
        if layer.kind is LayerKind.SLIDING and layer.window is not None:
            return cdiv(min(layer.window - 1 + self.in_flight(opts), ctx), block) + 1
        if layer.kind is LayerKind.CHUNKED and layer.window is not None:
            return cdiv(min(layer.window + self.in_flight(opts), ctx), block)
        return cdiv(ctx, block)

    def specs(self, layers: Sequence[LayerSpec], types: CacheTypes, opts: EngineOptions) -> list[_VllmSpec]:
        """Page size per layer after hybrid block-size alignment and page unification."""
        block = self.block_size(opts)
        cached = [layer for layer in layers if layer.kind.grows_with_context or layer.kind is LayerKind.STATE]
        attention = [layer for layer in cached if layer.kind is not LayerKind.STATE]
        states = [layer for layer in cached if layer.kind is LayerKind.STATE]
        if states and attention:
            attn_1tok = max(fp8_indexer_token_bytes(layer, types) for layer in attention)
            mamba_page = max(state_bytes(layer, types) for layer in states)
            align = 128 if any(layer.kind is LayerKind.MLA for layer in attention) else block
            raised = 16 * cdiv(align * cdiv(mamba_page, align * attn_1tok), 16)
            block = max(block, raised)
        pages = {layer.index: block * fp8_indexer_token_bytes(layer, types) for layer in attention}
        pages.update({layer.index: state_bytes(layer, types) for layer in states})
        if len(set(pages.values())) <= 1 or self.uniform_type(cached):
            # One spec, or one attention type with per-layer sizes (UniformTypeKVCacheSpecs): pages as they are.
            return [_VllmSpec(layer, block, pages[layer.index]) for layer in cached]
        # Hybrid with different page sizes (unify_kv_cache_spec_page_size): states are padded to the largest page;
        # attention layers whose page divides it get a proportionally larger block, the others are padded.
        max_page = max(pages.values())
        out = []
        for layer in cached:
            page = pages[layer.index]
            scale = 1 if layer.kind is LayerKind.STATE or max_page % page else max_page // page
            out.append(_VllmSpec(layer, block * scale, max_page))
        return out

    @staticmethod
    def uniform_type(layers: Sequence[LayerSpec]) -> bool:
        """All layers of one attention type and window (they share one group even if head counts differ)."""
        return len({(layer.kind, layer.window) for layer in layers}) == 1 and all(
            layer.kind is not LayerKind.STATE for layer in layers
        )

    def groups(self, specs: Sequence[_VllmSpec]) -> list[_VllmGroup]:
        if not specs:
            return []
        buckets: dict[tuple[object, ...], list[_VllmSpec]] = {}
        for spec in specs:
            key = (spec.layer.kind, spec.layer.window, spec.block, spec.page, spec.layer.signature())
            buckets.setdefault(key, []).append(spec)
        if len(buckets) == 1 or self.uniform_type([spec.layer for spec in specs]):
            return [_VllmGroup(specs[0].layer.kind, tuple(specs), len(specs))]
        counts = [len(b) for b in buckets.values()]
        lo, hi = min(counts), max(counts)
        size = hi if hi < 1.5 * lo else lo
        out = []
        for bucket in buckets.values():
            n_groups = cdiv(len(bucket), size)
            for g in range(n_groups):
                members = tuple(bucket[g::n_groups])  # strided, as vLLM assigns layers[i::num_groups]
                out.append(_VllmGroup(bucket[0].layer.kind, members, size))
        return out

    def stage_groups(self, layers: Sequence[LayerSpec], types: CacheTypes, opts: EngineOptions) -> list[_VllmGroup]:
        return self.groups(self.specs(layers, types, opts))

    def stage_costs(
        self, layout: CacheLayout, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> tuple[tuple[LayerCost, ...], ...]:
        """Costs per layer slot of every KV cache group, padding slots included."""
        stages = []
        for stage in self.stage_layers(layout, opts):
            costs = []
            for group in self.stage_groups(stage, types, opts):
                for spec in group.layers:
                    pages = self.pages_per_request(spec.layer, spec.block, ctx, opts)
                    if spec.layer.kind is LayerKind.STATE:
                        how = f"{pages} page(s) of {spec.page:,} B per request"
                        costs.append(LayerCost(spec.layer, 0, 0, pages * spec.page * batch, how))
                    else:
                        how = self.pages_how(spec, ctx, pages, opts)
                        per_token = spec.page // spec.block
                        costs.append(LayerCost(spec.layer, pages * spec.block * batch, per_token, 0, how))
                if group.padding:
                    first = group.layers[0]
                    pages = self.pages_per_request(first.layer, first.block, ctx, opts)
                    pad = LayerSpec(index=-1, kind=LayerKind.NONE)
                    how = f"{group.padding} padding layer(s) in a group of {group.size}: {pages} page(s) each"
                    costs.append(LayerCost(pad, 0, 0, group.padding * pages * first.page * batch, how))
            stages.append(tuple(costs))
        return tuple(stages)

    def pages_how(self, spec: _VllmSpec, ctx: int, pages: int, opts: EngineOptions) -> str:
        b = spec.block
        layer = spec.layer
        if layer.kind is LayerKind.SLIDING and layer.window is not None:
            return (
                f"cdiv(min({layer.window:,} - 1 + {self.in_flight(opts):,} in flight, {ctx:,}), {b}) + 1 = "
                f"{pages:,} pages of {b} tokens"
            )
        if layer.kind is LayerKind.CHUNKED and layer.window is not None:
            return (
                f"cdiv(min({layer.window:,} + {self.in_flight(opts):,} in flight, {ctx:,}), {b}) = "
                f"{pages:,} pages of {b} tokens"
            )
        return f"cdiv({ctx:,}, {b}) = {pages:,} pages of {b} tokens"

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = [f"pages of {self.block_size(opts)} tokens per layer (--block-size; vLLM's default 16)"]
        if any(layer.kind is LayerKind.MLA for layer in layout.layers):
            out.append(
                "MLA: one latent page per layer, whole on every rank; default MLA backends page 16 "
                "(FLASH_ATTN_MLA, Hopper) or 32 (FlashInfer-MLA, Blackwell); FlashMLA 64, CUTLASS MLA 128: "
                "pass --block-size"
            )
        if any(layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED) for layer in layout.layers):
            out.append(
                f"sliding / chunked layers reserve the window plus {self.in_flight(opts):,} in-flight tokens "
                "(max_num_batched_tokens x batches in flight) per request"
            )
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            mode = (
                "align mode (prefix caching on): 2 pages, Mamba2 +1 checkpoint"
                if opts.enable_prefix_caching
                else "1 page"
            )
            out.append(f"state layers: {mode} per request; the attention block is raised so a page holds a state")
        return out

    def facts(self, layout: CacheLayout, ctx: int, opts: EngineOptions) -> dict[str, int]:
        return {"block_size": self.block_size(opts), "in_flight_tokens": self.in_flight(opts)}


class SGLangEngine(Engine):
    """SGLang, as read in 0.5.23 (0.5.2 noted). Sources: srt/model_executor/pool_configurator.py,
    srt/mem_cache/kv_cache_configurator.py, srt/configs/model_config.py, srt/configs/mamba_utils.py.

    - Token-granular pools (--page-size 1 by default; FlashMLA 64, TRT-LLM MLA 32/64): a full layer holds ctx
      slots per request; KV heads per rank max(1, H_kv // tp) (get_num_kv_heads); sliding layers keep their window.
    - cell_size = bytes per token over all local KV layers: heads x (K dim + V dim) x bytes per layer; MLA
      (kv_lora_rank + rope) x bytes, no factor 2, no tp split; DeepSeek-V3.2's indexer adds index_head_dim +
      index_head_dim / 128 x 4 B (fp8 + scale) per layer.
    - Mamba / linear-attention state per request: conv (conv_dim / tp) x (kernel - 1) in bfloat16
      (SGLANG_MAMBA_CONV_DTYPE), SSM state in float32 unless the config's mamba_ssm_dtype says otherwise.
    - Capacity: max_total_num_tokens = rest // cell_size, aligned down to the page; hybrid SWA models split the
      budget so swa_tokens = swa_full_tokens_ratio (0.8) x full_tokens; hybrid Mamba models first carve out
      mamba_full_memory_ratio (0.9) / 1.9 of the budget for states.
    """

    name = "sglang"
    summary = "SGLang token pools: cell_size per token, page 1, fp32 SSM state, SWA pool ratio 0.8"
    SWA_RATIO = Fraction(8, 10)
    MAMBA_RATIO = Fraction(9, 10)
    split_kv_types = False
    TYPES = ("float16", "bfloat16", "float32", "fp8_e4m3", "fp8_e5m2", "nvfp4", "fp8_ds_mla")

    def page(self, opts: EngineOptions) -> int:
        return opts.block_size or 1

    def prepare(self, layout: CacheLayout) -> tuple[LayerSpec, ...]:
        return tuple(
            replace(
                layer,
                state=tuple(
                    replace(t, dtype="bfloat16") if t.name == "conv" else replace(t, dtype=t.dtype or "float32")
                    for t in layer.state
                ),
            )
            if layer.kind is LayerKind.STATE
            else layer
            for layer in layout.layers
        )

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        page = self.page(opts)
        held = layer.tokens_held(ctx)
        if not held:
            return 0, ""
        aligned = cdiv(held, page) * page
        how = f"{held:,} tokens" if page == 1 else f"cdiv({held:,}, page {page}) x {page} = {aligned:,} tokens"
        if layer.window is not None and layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED):
            how += f" (window {layer.window:,})"
        return aligned * batch, how

    def slot_bytes(self, layer: LayerSpec, types: CacheTypes) -> int:
        return fp8_indexer_token_bytes(layer, types)

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = [f"token pool, page size {self.page(opts)} (--page-size)"]
        if any(layer.indexer_head_dim for layer in layout.layers):
            out.append("DSA indexer keys stored as fp8 + one fp32 scale per 128 values")
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            out.append("state layers: conv state in bfloat16, SSM state in float32 (SGLang's defaults)")
        return out


class LlamaCppEngine(Engine):
    """llama.cpp, as read at ggml-org/llama.cpp@0c1e57098 (src/llama-context.cpp, llama-kv-cache.cpp,
    llama-kv-cache-iswa.cpp, llama-memory-recurrent.cpp, ggml-common.h).

    - n_ctx (-c) is rounded up to a multiple of 256; with -np N sequences the server shares one unified stream of
      n_ctx cells (kvplan: n_ctx = ctx x batch); without --kv-unified each sequence gets pad256(n_ctx / N) cells.
    - Per layer K = row_size(type_k, head_dim x KV heads) x cells and V likewise with type_v (block formats: q8_0
      34 B per 32 values ...). -ctk / -ctv default to f16 whatever the model's dtype.
    - Sliding layers (iSWA): pad256(min(cells per stream, window x (unified ? N : 1) + n_ubatch)) cells, or full
      size with --swa-full.
    - MLA (DeepSeek2 GGUFs with the MLA keys): K only, kv_lora_rank + rope values; V is a view of K.
    - Recurrent layers: conv state (kernel - 1) x conv_dim and SSM state, both float32, one row per sequence.
    - Layers split across GPUs (-sm layer), never heads: --pipeline-parallel-size, not --tensor-parallel-size.
    """

    name = "llama.cpp"
    summary = "llama.cpp: n_ctx padded to 256 cells, K/V types apart (default f16), SWA cells window x n_seq + n_ubatch"
    shards_heads = False
    linear_in_batch = False
    PAD = 256
    TYPES = ("float32", "float16", "bfloat16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")

    def cache_types(self, layout: CacheLayout, kv_cache_dtype: str, k: str | None, v: str | None) -> CacheTypes:
        base = "float16" if canonical_name(kv_cache_dtype) == "auto" else kv_cache_dtype
        types = resolve_types(layout, base, k_dtype=k, v_dtype=v)
        allowed_types(self.name, types, self.TYPES)
        return types

    def pad(self, n: int) -> int:
        return cdiv(n, self.PAD) * self.PAD

    def streams(self, batch: int, opts: EngineOptions) -> int:
        return 1 if opts.kv_unified else batch

    def cells_per_stream(self, ctx: int, batch: int, opts: EngineOptions) -> int:
        return self.pad(ctx * batch) if opts.kv_unified else self.pad(ctx)

    def prepare(self, layout: CacheLayout) -> tuple[LayerSpec, ...]:
        return tuple(
            replace(layer, state=tuple(replace(t, dtype="float32") for t in layer.state))
            if layer.kind is LayerKind.STATE
            else layer
            for layer in layout.layers
        )

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        if not layer.kind.grows_with_context:
            return 0, ""
        cells = self.cells_per_stream(ctx, batch, opts)
        streams = self.streams(batch, opts)
        if opts.kv_unified:
            how = f"pad256({ctx:,} x {batch} seq) = {cells:,} cells"
        else:
            how = f"{streams} streams x pad256({ctx:,}) = {cells:,} cells each"
        if layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED) and layer.window is not None and not opts.swa_full:
            seqs = batch if opts.kv_unified else 1
            swa = self.pad(min(cells, layer.window * seqs + opts.n_ubatch))
            how = f"pad256(min({cells:,}, {layer.window:,} x {seqs} + n_ubatch {opts.n_ubatch})) = {swa:,} cells"
            return swa * streams, how
        return cells * streams, how

    def fixed_bytes(self, layer: LayerSpec, types: CacheTypes) -> int:
        return state_bytes(layer, types)

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = [
            f"n_ctx = pad256({ctx:,} x {batch}) cells"
            + (" in one unified stream" if opts.kv_unified else f"; {batch} streams of pad256({ctx:,}) cells")
        ]
        out.append("K and V types apart (-ctk / -ctv; default f16)")
        if any(layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED) for layer in layout.layers):
            out.append(
                "sliding layers: full size (--swa-full)"
                if opts.swa_full
                else f"sliding layers: window x n_seq + n_ubatch ({opts.n_ubatch}) cells, padded to 256"
            )
        if any(layer.kind is LayerKind.MLA for layer in layout.layers):
            out.append("MLA: K only (latent + rope), V is a view of K")
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            out.append("recurrent layers: conv and SSM state in float32, one row per sequence")
        return out


class TRTLLMEngine(Engine):
    """TensorRT-LLM PyTorch backend (tensorrt_llm/_torch/pyexecutor/resource_manager.py, _util.py,
    llmapi/llm_args.py, read at 0004396).

    - Blocks of tokens_per_block = 32 (KvCacheConfig default); a sequence holds cdiv(len, 32) blocks per layer.
    - The allocator holds ceil(H_kv / tp) heads per rank (so heads are copied when tp > H_kv); MLA keeps the whole
      latent (kv_factor 1) on every rank.
    - Capacity: get_cache_size_per_token = bytes x local layers x kv_factor x (head_dim x H_kv // tp) (MLA:
      kv_lora_rank + rope, no tp), max_tokens = kv_memory // that, blocks = max_tokens // 32. The estimator
      floors H_kv x head_dim / tp, so it under-counts (over-promises tokens) when tp > H_kv.
    - Budget: free_gpu_memory_fraction (0.9) applies to the memory left after weights and activations, not to the
      total as vLLM's gpu_memory_utilization does.
    - Sliding-window (VSWA) pools: not traced in the source read; windowed layers are held at min(len, window)
      rounded up to whole blocks (stated as an assumption in the output).
    """

    name = "trtllm"
    summary = "TensorRT-LLM paged cache: 32-token blocks, ceil(H_kv / tp) heads per rank, fraction of free memory"
    DEFAULT_BLOCK = 32
    split_kv_types = False
    TYPES = ("float16", "bfloat16", "float32", "fp8_e4m3", "nvfp4")

    def block_size(self, opts: EngineOptions) -> int:
        return opts.block_size or self.DEFAULT_BLOCK

    def shard(self, layer: LayerSpec, tp: int) -> LayerSpec:
        if tp > 1 and layer.kind.has_kv_heads:
            return replace(
                layer, q_heads=layer.q_heads // tp, k_heads=cdiv(layer.k_heads, tp), v_heads=cdiv(layer.v_heads, tp)
            )
        return shard(layer, tp)

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        held = layer.tokens_held(ctx)
        if not held:
            return 0, ""
        b = self.block_size(opts)
        blocks = cdiv(held, b)
        how = f"cdiv({held:,}, {b}) = {blocks:,} blocks of {b} tokens"
        if layer.window is not None and layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED):
            how += f" (window {layer.window:,}; VSWA pool sizing not traced: assumed min(len, window))"
        return blocks * b * batch, how

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        return [f"blocks of {self.block_size(opts)} tokens (tokens_per_block)"]

    def facts(self, layout: CacheLayout, ctx: int, opts: EngineOptions) -> dict[str, int]:
        return {"tokens_per_block": self.block_size(opts)}


ENGINE_CLASSES: dict[str, type[Engine]] = {
    "ideal": Engine,
    "vllm": VLLMEngine,
    "sglang": SGLangEngine,
    "llama.cpp": LlamaCppEngine,
    "trtllm": TRTLLMEngine,
    "hf": HFEngine,
}


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


# ----------------------------------------------------------------------------------------------------------
# Capacity: what an engine makes of a KV memory budget


@dataclass(frozen=True)
class Capacity:
    """Blocks / tokens / cells an engine allocates from ``kv_memory_bytes`` per GPU, and its concurrency."""

    engine: str
    kv_memory_bytes: int
    max_model_len: int
    #: vLLM / TRT-LLM blocks; None for engines without blocks.
    block_size: int | None
    num_blocks: int | None
    kv_tokens: int
    #: How many requests of max_model_len fit at once (exact fraction; vLLM prints it with two decimals).
    max_concurrency: Fraction
    #: The arithmetic, line by line.
    lines: tuple[str, ...]
    facts: dict[str, int] = field(default_factory=dict)
    kv_dtype: str = ""

    @property
    def max_concurrent_requests(self) -> int:
        return int(self.max_concurrency)


def _sum_slot_bytes(stage: Sequence[LayerCost]) -> int:
    return sum(c.slot_bytes for c in stage)


def ideal_capacity(
    engine: Engine, layout: CacheLayout, kv_memory: int, max_model_len: int, kv_cache_dtype: str, opts: EngineOptions
) -> Capacity:
    """No pool and no blocks: concurrency = memory / one sequence's cost; tokens = concurrency x max_model_len
    (= memory // bytes per token when every layer grows with context)."""
    one = engine.estimate(layout, max_model_len, 1, kv_cache_dtype=kv_cache_dtype, opts=opts)
    per_seq = one.per_gpu_bytes
    per_token = _sum_slot_bytes(one.largest_stage)
    lines = [f"one sequence of {max_model_len:,} tokens costs {per_seq:,} B per GPU"]
    if per_seq == 0:
        raise OptionError("--max-model-len", f"{layout.model} caches nothing per sequence under {engine.name}")
    conc = Fraction(kv_memory, per_seq)
    lines.append(f"max concurrency = {kv_memory:,} / {per_seq:,} = {float(conc):.2f}")
    if per_seq == per_token * max_model_len:
        tokens = kv_memory // per_token
        lines.append(f"tokens = {kv_memory:,} // {per_token:,} B per token = {tokens:,}")
    else:
        tokens = conc.numerator * max_model_len // conc.denominator
        lines.append(
            f"tokens = concurrency x {max_model_len:,} = {tokens:,}: not memory / bytes-per-token, because windowed "
            "layers stop growing at their window and state layers cost a fixed amount per sequence"
        )
    return Capacity(
        engine.name, kv_memory, max_model_len, None, None, tokens, conc, tuple(lines), kv_dtype=one.types.label
    )


def vllm_capacity(
    engine: VLLMEngine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
) -> Capacity:
    """get_kv_cache_config_from_groups / get_max_concurrency_for_kv_cache_config / get_kv_cache_capacity."""
    engine.validate(layout, opts)
    types = engine.cache_types(layout, kv_cache_dtype, None, None)
    lines: list[str] = []
    best: tuple[Fraction, int, int, int] | None = None
    for i, stage in enumerate(engine.stage_layers(layout, opts)):
        groups = engine.stage_groups(stage, types, opts)
        per_block = max(sum(spec.page for spec in g.layers) + g.padding * g.layers[0].page for g in groups)
        num_blocks = max(kv_memory // per_block, 0)
        per_request = sum(
            engine.pages_per_request(g.layers[0].layer, g.layers[0].block, max_model_len, opts) for g in groups
        )
        conc = Fraction(num_blocks, per_request)
        where = f"stage {i}: " if opts.pipeline_parallel_size > 1 else ""
        lines.append(
            f"{where}{len(groups)} group(s); bytes per block = {per_block:,} B (one page in every layer slot "
            "of a group)"
        )
        lines.append(f"{where}num_blocks = {kv_memory:,} // {per_block:,} = {num_blocks:,} (one is the null block)")
        lines.append(f"{where}blocks one request of {max_model_len:,} tokens needs = {per_request:,}")
        if best is None or conc < best[0]:
            best = (conc, num_blocks, per_request, len(groups))
    assert best is not None
    conc, num_blocks, per_request, n_groups = best
    tokens = conc.numerator * max_model_len // conc.denominator
    block = engine.block_size(opts)
    lines.append(f"max concurrency = {num_blocks:,} / {per_request:,} = {float(conc):.2f}x")
    lines.append(
        f"GPU KV cache size = int({float(conc):.2f} x {max_model_len:,}) = {tokens:,} tokens (vLLM 0.33; "
        f"vLLM 0.11 printed (num_blocks // {n_groups} groups) x block size = "
        f"{num_blocks // n_groups * block:,})"
    )
    facts = {"num_groups": n_groups, "blocks_per_request": per_request, "in_flight_tokens": engine.in_flight(opts)}
    return Capacity(
        engine.name, kv_memory, max_model_len, block, num_blocks, tokens, conc, tuple(lines), facts, types.label
    )


def sglang_capacity(
    engine: SGLangEngine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
) -> Capacity:
    """profile_max_num_token / calculate_pool_sizes, HybridSWAPoolConfigurator, _handle_max_mamba_cache."""
    one = engine.estimate(layout, 1, 1, kv_cache_dtype=kv_cache_dtype, opts=opts)
    stage = one.largest_stage
    page = engine.page(opts)
    full = sum(c.slot_bytes for c in stage if c.spec.kind in (LayerKind.FULL, LayerKind.MLA))
    swa = sum(c.slot_bytes for c in stage if c.spec.kind in (LayerKind.SLIDING, LayerKind.CHUNKED))
    per_req_state = sum(c.fixed_bytes for c in stage)
    lines = []
    rest = kv_memory
    max_states = None
    if per_req_state:
        budget = Fraction(rest) * engine.MAMBA_RATIO / (1 + engine.MAMBA_RATIO)
        max_states = int((budget - per_req_state) // per_req_state)
        rest -= (max_states + 1) * per_req_state
        lines.append(
            f"state per request {per_req_state:,} B; state budget = memory x 0.9 / 1.9 -> {max_states:,} "
            f"request states; {rest:,} B left for KV"
        )
    if swa:
        cell = full + engine.SWA_RATIO * swa
        max_total = int(rest // cell)
        full_tokens = max_total // page * page
        swa_tokens = int(full_tokens * engine.SWA_RATIO) // page * page
        lines.append(f"cell = {full:,} (full layers) + 0.8 x {swa:,} (sliding layers) = {float(cell):,.1f} B")
        lines.append(
            f"full_layer_tokens = {rest:,} // cell = {full_tokens:,}; swa_layer_tokens = 0.8 x that = {swa_tokens:,}"
        )
        window = max(c.spec.window or 0 for c in stage if c.spec.kind in (LayerKind.SLIDING, LayerKind.CHUNKED))
        conc = min(Fraction(full_tokens, max_model_len), Fraction(swa_tokens, min(max_model_len, window)))
        tokens = full_tokens
    else:
        if full == 0:
            raise OptionError("--max-model-len", f"{layout.model} has no token cache under sglang")
        tokens = rest // full // page * page
        lines.append(f"cell_size = {full:,} B per token; max_total_num_tokens = {rest:,} // {full:,} = {tokens:,}")
        conc = Fraction(tokens, max_model_len)
    if max_states is not None:
        conc = min(conc, Fraction(max_states))
    running = min(max(min(int(tokens / max_model_len * 512), 4096), 2048), tokens // 2)
    lines.append(
        f"max concurrency at {max_model_len:,} tokens = {float(conc):.2f}; default max_running_requests = {running:,}"
    )
    return Capacity(
        engine.name,
        kv_memory,
        max_model_len,
        page if page > 1 else None,
        None,
        tokens,
        conc,
        tuple(lines),
        {"max_running_requests": running},
        one.types.label,
    )


def largest(fits: Callable[[int], bool], hi: int = 1 << 40) -> int:
    """The largest n >= 0 with fits(n), for a monotone fits (fits(0) is assumed true)."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def llamacpp_capacity(
    engine: LlamaCppEngine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
) -> Capacity:
    """llama.cpp allocates what -c asks for; this finds the largest -c and -np that fit the memory."""

    def cost(ctx: int, batch: int) -> int:
        return engine.estimate(layout, ctx, batch, kv_cache_dtype=kv_cache_dtype, opts=opts).per_gpu_bytes

    cells = largest(lambda n: n == 0 or cost(n * engine.PAD, 1) <= kv_memory, 1 << 28) * engine.PAD
    seqs = largest(lambda b: b == 0 or cost(max_model_len, b) <= kv_memory, 1 << 24)
    lines = [
        f"largest -c that fits: {cells:,} cells (a multiple of 256)",
        f"largest -np with -c {max_model_len:,} per sequence: {seqs:,} sequences",
    ]
    label = engine.cache_types(layout, kv_cache_dtype, None, None).label
    return Capacity(
        engine.name, kv_memory, max_model_len, None, None, cells, Fraction(seqs), tuple(lines), kv_dtype=label
    )


def trtllm_capacity(
    engine: TRTLLMEngine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
) -> Capacity:
    """KVCacheManager.get_cache_size_per_token and calculate_max_num_blocks."""
    engine.validate(layout, opts)
    types = engine.cache_types(layout, kv_cache_dtype, None, None)
    tp = opts.tensor_parallel_size
    stage = max(split_layers(layout.layers, opts.pipeline_parallel_size), key=len)
    values = 0
    for layer in stage:
        if layer.kind is LayerKind.MLA:
            values += layer.latent_dim  # kv_factor 1, never split by tp
        elif layer.kind.grows_with_context:
            values += 2 * (layer.k_head_dim * layer.k_heads // tp)  # floors H_kv x head_dim / tp
    nvfp4 = types.k.name == "nvfp4"
    per_token = cdiv(values, 2) + cdiv(values, 16) if nvfp4 else values * types.k.element_bytes
    if per_token == 0:
        raise OptionError("--max-model-len", f"{layout.model} has no token cache under trtllm")
    block = engine.block_size(opts)
    max_tokens = kv_memory // per_token
    num_blocks = max_tokens // block
    per_request = cdiv(max_model_len, block)
    conc = Fraction(num_blocks, per_request)
    lines = [
        f"bytes per token (get_cache_size_per_token) = {per_token:,} B",
        f"max_tokens = {kv_memory:,} // {per_token:,} = {max_tokens:,}",
        f"blocks = max_tokens // {block} = {num_blocks:,}",
        f"max concurrency = {num_blocks:,} / cdiv({max_model_len:,}, {block}) = {float(conc):.2f}",
    ]
    if any(layer.kind.has_kv_heads and tp > layer.k_heads for layer in stage):
        lines.append(
            "note: tp exceeds the KV heads: the estimator counts a fraction of a head while the allocator "
            "holds a whole one, so TensorRT-LLM promises more tokens than fit"
        )
    if any(layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED, LayerKind.STATE) for layer in stage):
        lines.append("note: the estimator charges every layer per token (windows and states ignored)")
    return Capacity(
        engine.name,
        kv_memory,
        max_model_len,
        block,
        num_blocks,
        num_blocks * block,
        conc,
        tuple(lines),
        kv_dtype=types.label,
    )


def capacity(
    engine_name: str,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    *,
    kv_cache_dtype: str = "auto",
    opts: EngineOptions | None = None,
) -> Capacity:
    """What ``engine_name`` allocates from ``kv_memory`` bytes per GPU, computed the way that engine does."""
    check_positive("--kv-memory", kv_memory)
    check_positive("--max-model-len", max_model_len)
    opts = opts or EngineOptions()
    engine = get_engine(engine_name)
    if isinstance(engine, VLLMEngine):
        return vllm_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)
    if isinstance(engine, SGLangEngine):
        return sglang_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)
    if isinstance(engine, LlamaCppEngine):
        return llamacpp_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)
    if isinstance(engine, TRTLLMEngine):
        return trtllm_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)
    return ideal_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)


def kv_budget(engine_name: str, usable: int, weights: int, reserve: int, fraction: Fraction) -> tuple[int, str]:
    """The KV memory per GPU an engine sets aside from a GPU, and the rule in words.

    vLLM (and SGLang's mem_fraction_static, llama.cpp, transformers): ceil(usable x fraction) - weights - reserve.
    TensorRT-LLM: free_gpu_memory_fraction applies to what is left after weights and activations:
    floor((usable - weights - reserve) x fraction).
    """
    if get_engine(engine_name).name == "trtllm":
        kv = (usable - weights - reserve) * fraction
        value = kv.numerator // kv.denominator
        return value, (
            f"({usable:,} - {weights:,} weights - {reserve:,} reserve) x {fraction} = {value:,} B "
            "(TensorRT-LLM: the fraction applies to free memory)"
        )
    requested = -(-usable * fraction.numerator // fraction.denominator)
    value = requested - weights - reserve
    return value, f"ceil({usable:,} x {fraction}) - {weights:,} weights - {reserve:,} reserve = {value:,} B"
