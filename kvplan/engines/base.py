"""What every engine shares: options, per-layer costs and results, tensor- and pipeline-parallel
sharding, and the ideal accounting (what the architecture must keep) that each engine overrides where it differs.

All figures are exact integers. A result keeps the per-layer costs of every pipeline stage, so it can report
the largest GPU and the whole deployment, and explain what the engine adds over ``ideal`` and why.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar

from kvplan.dtypes import canonical_name
from kvplan.engines.budget import WHOLE_GPU, BudgetTerm, KvBudget, total_fraction_budget
from kvplan.engines.overhead import ForwardShape, GiB
from kvplan.errors import OptionError, Param, spell
from kvplan.formula import (
    CacheEstimate,
    CacheTypes,
    Explanation,
    Factor,
    KindBreakdown,
    Product,
    check_positive,
    compressed_bytes,
    estimate,
    resolve_types,
    state_bytes,
    token_bytes,
)
from kvplan.layout import CacheLayout, LayerKind, LayerSpec, StateTensor

if TYPE_CHECKING:
    from kvplan.engines.tensors import LayerTensors


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[.+-].*)?$")


def version_tuple(text: str, oldest: tuple[int, int, int], newest: tuple[int, int, int]) -> tuple[int, int, int]:
    """``0.19``, ``v0.19.1`` or ``0.20.1rc1`` as (0, 19, 0) / (0, 19, 1) / (0, 20, 1), within [oldest, newest]."""
    match = _VERSION.match(text.strip())
    if not match:
        raise OptionError(Param.ENGINE_VERSION, f"{text!r} is not a version (examples: 0.19, 0.19.1)")
    major, minor, patch = (int(g) if g else 0 for g in match.groups())
    version = (major, minor, patch)
    if not oldest <= version <= newest:
        span = f"{'.'.join(map(str, oldest))} to {'.'.join(map(str, newest))}"
        raise OptionError(Param.ENGINE_VERSION, f"{text.strip()} is outside the versions kvplan models ({span})")
    return version


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
    #: vLLM async scheduling: two batches in flight, so sliding layers keep twice the batched tokens. None: the
    #: modelled version's default (on from vLLM 0.14.0).
    async_scheduling: bool | None = None
    #: vLLM --max-num-seqs / SGLang --max-running-requests / TensorRT-LLM max_batch_size: the batch the engine
    #: profiles its activation peak with. None: the engine's default for the GPU.
    max_num_seqs: int | None = None
    #: vLLM --enforce-eager: no CUDA graphs (and no CUDA-graph memory in the budget).
    enforce_eager: bool = False
    #: Draft layers of speculative decoding kept in the same pool: EAGLE-style draft layers with the target's
    #: attention shape, or the model's own MTP layers (num_nextn_predict_layers) where it has them.
    speculative_layers: int = 0
    #: Tokens drafted per step (vLLM num_speculative_tokens, llama.cpp --spec-draft-n-max; llama.cpp keeps that
    #: many recurrent-state snapshots). None: the engine's default.
    speculative_tokens: int | None = None
    #: The engine version whose rules apply. None: the version kvplan models (named in the output).
    engine_version: str | None = None
    #: The GPU the engine runs on, for defaults that depend on it (vLLM's max_num_batched_tokens): total bytes
    #: as the engine reads them, and the name it reports. None: no GPU named.
    device_memory_bytes: int | None = None
    device_name: str = ""


@dataclass(frozen=True)
class Workload:
    """What an engine's memory before the cache is computed for: the model, its forward shape, the request
    length and the engine's options (tp, pp, batch limits, CUDA graphs, speculative layers, version)."""

    layout: CacheLayout
    shape: ForwardShape
    max_model_len: int
    opts: EngineOptions


@dataclass(frozen=True)
class LaunchPlan:
    """What a plan asks an engine to serve: the numbers its launch command carries."""

    #: The model as the user named it (a Hub id, or a path).
    model: str
    #: Tokens per sequence (vLLM --max-model-len, SGLang --context-length, TensorRT-LLM --max_seq_len).
    max_model_len: int
    #: Sequences served at once (vLLM --max-num-seqs, SGLang --max-running-requests, llama.cpp -np).
    max_num_seqs: int
    #: The KV dtype as asked (``auto`` for the engine's default) and, for llama.cpp, K and V apart.
    kv_cache_dtype: str = "auto"
    k_dtype: str | None = None
    v_dtype: str | None = None
    #: The memory fraction the plan's budget used (None: the engine's default was not overridden).
    fraction: Fraction | None = None
    opts: EngineOptions = field(default_factory=lambda: EngineOptions())
    #: How speculative decoding drafts when opts.speculative_layers > 0: "mtp" (the model's own MTP layers) or
    #: "eagle" (a separate draft checkpoint).
    speculative_method: str = "eagle"
    #: The canonical dtype ``auto`` resolves to for this model (the engine's own "auto" spelling then fits).
    auto_dtype: str = ""
    #: A KV memory the plan was given in bytes rather than derived from a GPU (vLLM --kv-cache-memory-bytes).
    kv_cache_memory_bytes: int | None = None
    #: Whether the model was read from a GGUF file (llama.cpp runs GGUF files only).
    gguf: bool = False


def engine_dtype(plan_dtype: str, auto_dtype: str, spellings: dict[str, str], engine: str, option: str) -> str:
    """A KV dtype in an engine's own spelling: its "auto" when that is what auto resolves to, else the engine's
    name for it; a dtype the engine's flag has no value for is an error naming the values it has."""
    name = "auto" if plan_dtype == "auto" else canonical_name(plan_dtype)
    if name in ("auto", auto_dtype):
        return "auto"
    if name not in spellings:
        raise OptionError(
            Param.KV_CACHE_DTYPE,
            f"{engine}'s {option} has no value for {name} (it takes {', '.join(spellings.values())})",
        )
    return spellings[name]


def fraction_text(value: Fraction) -> str:
    """A fraction as a short decimal for a command line (0.9, 0.925): exact, since it came from a decimal."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == value else str(float(value))


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


def split_layers(layers: Sequence[LayerSpec], pp: int) -> tuple[tuple[LayerSpec, ...], ...]:
    """Contiguous pipeline stages as vLLM's get_pp_indices makes them (vllm/distributed/utils.py): every stage
    gets L // pp layers and the remainder goes one each to the stages before the last, counting back from the
    second-to-last (the last stage also holds the LM head)."""
    n = len(layers)
    if pp > n:
        raise OptionError(Param.PIPELINE_PARALLEL_SIZE, f"{pp} stages for {n} layers; at most {n}")
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
                Param.TENSOR_PARALLEL_SIZE, f"{tp} does not divide the {layer.q_heads} query heads of {layout.model}"
            )
        if layer.kind.has_kv_heads:
            h = layer.k_heads
            if (h >= tp and h % tp) or (h < tp and tp % h):
                raise OptionError(
                    Param.TENSOR_PARALLEL_SIZE,
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


class Engine(ABC):
    """An engine: the per-layer rules below are the ideal accounting (what the architecture must keep), which an
    engine overrides where it differs. What no engine may leave to a default is abstract: how it turns a memory
    budget into blocks / tokens (:meth:`capacity`), how much of a GPU it sets aside (:meth:`kv_budget`), the
    tensors it allocates (:meth:`stage_tensors`, what ``kvplan verify`` builds) and the command that serves a plan
    (:meth:`launch_command`). The registry refuses a class that lacks one, or a name, summary, label or rules text
    (engines/registry.py)."""

    #: The name ``--engine`` takes; ``aliases`` are other spellings it accepts.
    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    #: One line: what this engine's accounting is.
    summary: ClassVar[str]
    #: How ``--help`` lists it: the name, and a word on it when the name alone does not say.
    label: ClassVar[str]
    #: Its rules in a few clauses, for the README's engine table (scripts/sync_readme.py writes the table).
    rules_text: ClassVar[str]
    #: What the engine does when an option is not given, in words, by parameter (``--help`` lists them per engine;
    #: the registry refuses an engine without the table, which may be empty).
    FLAG_DEFAULTS: ClassVar[Mapping[Param, str]]
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
    #: The layer kinds this engine has a rule for; a model with any other is refused, never costed silently.
    KINDS: frozenset[LayerKind] = frozenset(LayerKind)

    def cache_types(self, layout: CacheLayout, kv_cache_dtype: str, k: str | None, v: str | None) -> CacheTypes:
        if not self.split_kv_types and (k is not None or v is not None):
            raise OptionError(
                Param.K_DTYPE, f"{spell(Param.ENGINE)} {self.name} stores K and V in one {spell(Param.KV_CACHE_DTYPE)}"
            )
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
        if layer.window is not None and layer.kind.windowed:
            how = f"min(ctx {ctx:,}, {'chunk' if layer.kind is LayerKind.CHUNKED else 'window'} {layer.window:,})"
        return held * batch, how

    def slot_bytes(self, layer: LayerSpec, types: CacheTypes) -> int:
        return token_bytes(layer, types)

    def fixed_bytes(self, layer: LayerSpec, types: CacheTypes) -> int:
        """Fixed bytes per sequence (SSM / linear-attention state, cross-attention image tokens)."""
        return state_bytes(layer, types)

    def compressed_bytes(self, layer: LayerSpec, ctx: int, types: CacheTypes) -> int:
        """Bytes per sequence of a COMPRESSED layer's compressed entries (DeepSeek-V4 CSA / HCA)."""
        return compressed_bytes(layer, ctx, types)

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        return []

    def facts(self, layout: CacheLayout, ctx: int, opts: EngineOptions) -> dict[str, int]:
        return {}

    # -- what every engine states (abstract: no default) -----------------------------------------------------

    @abstractmethod
    def kv_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None = None
    ) -> KvBudget:
        """KV memory per GPU from a GPU of ``usable`` bytes holding ``weights``, at ``fraction`` (None: the engine's
        default), with the arithmetic (engines/budget.py). ``reserve`` replaces every other term when given; else
        the engine subtracts its own terms for ``work`` (the stated reserve when there is none)."""

    @abstractmethod
    def capacity(
        self,
        layout: CacheLayout,
        kv_memory: int,
        max_model_len: int,
        kv_cache_dtype: str,
        opts: EngineOptions,
        k_dtype: str | None = None,
        v_dtype: str | None = None,
    ) -> Capacity:
        """Blocks / tokens / concurrency this engine makes of ``kv_memory`` bytes per GPU, computed its way (K and
        V types apart only where the engine stores them apart)."""

    @abstractmethod
    def stage_tensors(
        self, stage: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> list[LayerTensors]:
        """The tensors one GPU of a pipeline stage allocates for ``batch`` sequences of ``ctx`` tokens (layers as
        :meth:`stage_layers` gives them), built from the specs and this engine's rules, not from its estimate."""

    @abstractmethod
    def launch_command(self, plan: LaunchPlan) -> tuple[str, ...] | None:
        """The command that serves ``plan`` on this engine, as its flags spell it (None: no server to launch)."""

    #: What kvplan holds back for an engine it has no measured terms for (ideal, transformers, llama.cpp):
    #: a stated figure, printed as such. Engines that profile a dummy forward pass subtract the activation peak,
    #: the growth of non-torch memory (NCCL buffers, cuBLAS workspaces) and CUDA graphs (vLLM's terms, in
    #: engines/vllm.py, come to 2.1-4.3 GiB for 7B-70B models on an H100); vllm#14447 on a 24 GiB card logged
    #: 0.20 GiB non-torch + 0.37 GiB activation peak. The CUDA context (0.3-0.5 GiB with lazy module loading,
    #: pytorch#107667, #109888) lives outside vLLM's requested share, in the (1 - utilization) headroom. Long
    #: prefill chunks, big vocabularies, multimodal encoders or speculative decoding need more: pass --reserve.
    STATED_RESERVE = 2 * GiB

    def stated_note(self) -> str:
        return f"activation peak, NCCL/cuBLAS workspaces; {spell(Param.RESERVE_BYTES)}"

    def overhead_terms(self, work: Workload, fraction: Fraction) -> tuple[BudgetTerm, ...]:
        """What the engine holds on each GPU besides the weights and the KV cache, term by term (at the memory
        ``fraction`` the budget uses): the stated reserve unless the engine has its own terms."""
        return (BudgetTerm("reserve", self.STATED_RESERVE, self.stated_note()),)

    def held_terms(
        self, weights: int, reserve: int | None, work: Workload | None, fraction: Fraction
    ) -> tuple[BudgetTerm, ...]:
        """The weights, then --reserve when given (it replaces every other term), else the engine's own terms
        (the stated reserve when there is no workload to compute them for)."""
        head = BudgetTerm("weights", weights)
        if reserve is not None:
            given = f"{spell(Param.RESERVE_BYTES)}, in place of the engine's own terms"
            return head, BudgetTerm("reserve", reserve, given)
        if work is None:
            return head, BudgetTerm("reserve", self.STATED_RESERVE, self.stated_note())
        return head, *self.overhead_terms(work, fraction)

    #: The version whose rules this engine's module follows (named in every budget), and the option that names it.
    VERSION = ""

    def version_label(self, opts: EngineOptions) -> str:
        """The version whose rules apply; an engine that models one version refuses any other."""
        if opts.engine_version is not None and opts.engine_version.strip().lstrip("v") != self.VERSION:
            raise OptionError(Param.ENGINE_VERSION, f"kvplan models {self.name} {self.VERSION or '(no version)'} only")
        return self.VERSION

    def default_fraction(self, work: Workload | None) -> tuple[Fraction, str]:
        """The memory fraction when none is given, and why: vLLM's gpu_memory_utilization default, 0.9
        (vllm/config/cache.py), which kvplan also takes for engines without one."""
        return Fraction(9, 10), spell(Param.UTILIZATION)

    def fraction_and_note(self, fraction: Fraction | None, work: Workload | None) -> tuple[Fraction, str]:
        return (fraction, spell(Param.UTILIZATION)) if fraction is not None else self.default_fraction(work)

    def whole_gpu_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None
    ) -> KvBudget:
        """The common budget rule: ``ceil(usable x fraction) - weights - the held terms``, the fraction a share of
        the whole GPU (vLLM's request_memory, vllm/v1/worker/utils.py; llama.cpp and transformers take what is
        asked)."""
        used, note = self.fraction_and_note(fraction, work)
        terms = self.held_terms(weights, reserve, work, used)
        version = self.version_label(work.opts) if work is not None else self.VERSION
        return total_fraction_budget(self.name, usable, used, terms, WHOLE_GPU, note, version)

    #: The flags of the engine's own server that kvplan writes or cites (tests/test_flags.py: every flag a
    #: message or a launch command names is kvplan's or one of these); empty for an engine with no server.
    SERVER_FLAGS: ClassVar[frozenset[str]] = frozenset()

    @property
    def has_server(self) -> bool:
        """Whether the engine is a server with a launch command (ideal and transformers are not)."""
        return bool(self.SERVER_FLAGS)

    def launch(self, layout: CacheLayout, plan: LaunchPlan) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        """The launch command for ``plan`` on ``layout``, and what it needs besides its arguments."""
        auto = self.cache_types(layout, "auto", None, None).k.name
        method = "mtp" if layout.mtp_layers else "eagle"
        plan = replace(plan, auto_dtype=auto, speculative_method=method, gguf=bool(layout.file_tensors))
        command = self.launch_command(plan)
        notes = []
        if command is not None and plan.opts.speculative_layers and method == "eagle":
            notes.append('--speculative-config: put the EAGLE draft checkpoint\'s path or Hub id in "model"')
        return command, (*notes, *self.launch_notes(plan))

    def launch_notes(self, plan: LaunchPlan) -> tuple[str, ...]:
        return ()

    # -- assembly ----------------------------------------------------------------------------------------------

    def layer_cost(self, layer: LayerSpec, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions) -> LayerCost:
        slots, how = self.slots(layer, ctx, batch, opts)
        fixed = self.fixed_bytes(layer, types)
        if fixed and not how:
            how = "one fixed state per sequence"
        if layer.kind is LayerKind.CROSS:
            how = f"{layer.images} image(s) x {layer.tokens_per_image:,} tokens, whatever the context"
        compressed = self.compressed_bytes(layer, ctx, types)
        if compressed:
            fixed += compressed
            how += f"; + {layer.compressed_entries(ctx):,} compressed entries (ctx // {layer.compress_ratio})"
        return LayerCost(layer, slots, self.slot_bytes(layer, types) if slots else 0, fixed * batch, how)

    def draft_layers(self, layout: CacheLayout, opts: EngineOptions) -> tuple[LayerSpec, ...]:
        """The layers speculative decoding adds to the pool (before tensor parallelism).

        A model with multi-token-prediction layers drafts with them (num_nextn_predict_layers /
        mtp_num_hidden_layers: vLLM's DeepSeekMTP / Qwen3.5 MTP proposers register one attention layer per MTP
        layer in the same static forward context as the target). Otherwise the draft is EAGLE-style: layers with
        the target's attention shape, whose KV vLLM allocates beside the target's (vllm/v1/spec_decode/eagle.py,
        EagleProposer.load_model: the draft's attention layers are every layer the draft model adds, so
        get_kv_cache_spec gives them pages in the same pool).
        """
        n = opts.speculative_layers
        if n == 0:
            return ()
        if layout.mtp_layers:
            if n > len(layout.mtp_layers):
                raise OptionError(
                    Param.SPECULATIVE_LAYERS,
                    f"{layout.model} has {len(layout.mtp_layers)} multi-token-prediction layer(s); "
                    f"it cannot draft with {n}",
                )
            return layout.mtp_layers[:n]
        shape = next((layer for layer in layout.layers if layer.kind in (LayerKind.FULL, LayerKind.MLA)), None)
        if shape is None:
            raise OptionError(
                Param.SPECULATIVE_LAYERS, f"{layout.model} has no full-attention layer whose shape a draft could copy"
            )
        first = layout.num_layers
        return tuple(replace(shape, index=first + i) for i in range(n))

    def stage_layers(self, layout: CacheLayout, opts: EngineOptions) -> tuple[tuple[LayerSpec, ...], ...]:
        """Per pipeline stage, the layers one GPU holds (heads already split by tensor parallelism). Draft layers
        of speculative decoding sit on the last stage, where the drafter runs after the target's last layer."""
        tp = opts.tensor_parallel_size
        return tuple(tuple(self.shard(layer, tp) for layer in stage) for stage in self.unsplit_stages(layout, opts))

    def unsplit_stages(self, layout: CacheLayout, opts: EngineOptions) -> tuple[tuple[LayerSpec, ...], ...]:
        """Per pipeline stage, the layers it holds with their whole heads (draft layers on the last stage)."""
        stages = list(split_layers(self.prepare(layout), opts.pipeline_parallel_size))
        stages[-1] = (*stages[-1], *self.draft_layers(layout, opts))
        return tuple(stages)

    def draft_rule(self, layout: CacheLayout, opts: EngineOptions) -> list[str]:
        n = opts.speculative_layers
        if n == 0:
            return []
        what = "multi-token-prediction" if layout.mtp_layers else "EAGLE-style draft (the target's attention shape)"
        return [f"speculative decoding: {n} {what} layer(s) cached in the same pool, on the last pipeline stage"]

    def stage_costs(
        self, layout: CacheLayout, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> tuple[tuple[LayerCost, ...], ...]:
        """Per pipeline stage, what one GPU of that stage holds, layer by layer."""
        return tuple(
            tuple(self.layer_cost(layer, ctx, batch, types, opts) for layer in stage)
            for stage in self.stage_layers(layout, opts)
        )

    def validate(self, layout: CacheLayout, opts: EngineOptions) -> None:
        tp = check_positive(Param.TENSOR_PARALLEL_SIZE, opts.tensor_parallel_size)
        pp = check_positive(Param.PIPELINE_PARALLEL_SIZE, opts.pipeline_parallel_size)
        if self.single_process and (tp > 1 or pp > 1):
            raise OptionError(
                Param.TENSOR_PARALLEL_SIZE, f"{spell(Param.ENGINE)} {self.name} runs in one process: use 1"
            )
        if tp > 1 and not self.shards_heads:
            raise OptionError(
                Param.TENSOR_PARALLEL_SIZE,
                f"{spell(Param.ENGINE)} {self.name} splits layers, not heads: use "
                f"{spell(Param.PIPELINE_PARALLEL_SIZE)}",
            )
        check_tp(layout, tp)
        missing = [kind.value for kind in layout.kinds if kind not in self.KINDS]
        if missing:
            raise OptionError(
                Param.ENGINE,
                f"{self.name} has no rule for {', '.join(missing)} layers ({layout.model}); "
                f"{spell(Param.ENGINE)} ideal or hf can cost them",
            )
        self.version_label(opts)
        for name in ("block_size", "max_num_batched_tokens"):
            value = getattr(opts, name)
            if value is not None:
                check_positive(Param(name), value)
        check_positive(Param.N_UBATCH, opts.n_ubatch)
        if opts.max_num_seqs is not None:
            check_positive(Param.MAX_NUM_SEQS, opts.max_num_seqs)
        if opts.speculative_tokens is not None:
            check_positive(Param.SPECULATIVE_TOKENS, opts.speculative_tokens)
        drafts = opts.speculative_layers
        if isinstance(drafts, bool) or not isinstance(drafts, int) or drafts < 0:
            raise OptionError(Param.SPECULATIVE_LAYERS, f"must be a whole number of layers, 0 or more; got {drafts!r}")

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
        check_positive(Param.CTX, ctx)
        check_positive(Param.BATCH, batch)
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
            rules=(
                *tp_rule(layout, opts.tensor_parallel_size),
                *self.draft_rule(layout, opts),
                *self.rules(layout, ctx, batch, opts),
            ),
            facts=self.facts(layout, ctx, opts),
        )


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
                Param.KV_CACHE_DTYPE,
                f"{spell(Param.ENGINE)} {engine} does not store KV as {t}; it offers: {', '.join(names)}",
            )


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
