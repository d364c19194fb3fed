"""GGUF metadata (``<arch>.*`` keys) -> :class:`~kvplan.layout.CacheLayout`, as llama.cpp reads them.

A GGUF states its hyperparameters the way llama.cpp's ``llama_model::load_hparams`` (src/llama-model.cpp)
consumes them, so each rule here follows that function (read at ggml-org/llama.cpp master) and the KV-cache
code that uses the result (src/llama-hparams.cpp, src/llama-kv-cache.cpp):

- ``block_count``, ``embedding_length``, ``context_length``; ``attention.head_count`` and
  ``attention.head_count_kv`` are a scalar or one value per layer (``get_key_or_arr``); a missing
  ``head_count_kv`` means ``head_count`` (MHA). ``attention.key_length`` / ``value_length`` default to
  ``embedding_length / head_count``.
- Sliding layers follow each architecture's ``set_swa_pattern(n)`` call (layer il slides when
  ``il % n < n - 1``), or the file's own ``attention.sliding_window_pattern``.
- Recurrent layers (Mamba, Gated DeltaNet) keep the states llama-hparams.cpp sizes: ``n_embd_r`` =
  (ssm.conv_kernel - 1) x (ssm.inner_size + 2 x ssm.group_count x ssm.state_size) and ``n_embd_s`` =
  ssm.state_size x ssm.inner_size.
- ``nextn_predict_layers`` trailing blocks are multi-token-prediction layers, reported apart.

Every ``<arch>.*`` key is accounted for: a rule reads it, or it is declared unable to change the cache
(:data:`HARMLESS_KEYS`), or it becomes a :class:`~kvplan.layout.ConfigWarning` on the layout (the config.json
key accounting's), so the output says the figure may be wrong. Weight bytes come from the tensor infos (see
:mod:`kvplan.weights.gguf`), not from these keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kvplan.errors import ConfigError
from kvplan.layout import (
    CacheLayout,
    ConfigWarning,
    FileTensor,
    LayerKind,
    LayerSpec,
    StateTensor,
    WarningKind,
    attention_layer,
    mla_layer,
)
from kvplan.limits import MAX_COUNT, MAX_HEADS, MAX_LAYERS
from kvplan.readers.gguf import GgufArray, GgufModel, Value

#: ``<arch>.`` keys llama.cpp reads for the compute graph or the weights only: they cannot change what the KV
#: cache or a recurrent state holds (norm epsilons, rope, MoE routing, logit scales ...). ``rope.*`` is
#: harmless as a whole (rope changes values, never sizes).
HARMLESS_KEYS = frozenset(
    {
        "vocab_size",
        "feed_forward_length",
        "expert_feed_forward_length",
        "expert_shared_feed_forward_length",
        "expert_count",
        "expert_used_count",
        "expert_shared_count",
        "expert_weights_scale",
        "expert_weights_norm",
        "expert_gating_func",
        "expert_group_count",
        "expert_group_used_count",
        "leading_dense_block_count",
        "interleave_moe_layer_step",
        "moe_every_n_layers",
        "attention.layer_norm_epsilon",
        "attention.layer_norm_rms_epsilon",
        "attention.group_norm_epsilon",
        "attention.group_norm_groups",
        "attention.clamp_kqv",
        "attention.max_alibi_bias",
        "attention.causal",
        "attention.scale",
        "attention.output_scale",
        "attention.temperature_length",
        "attention.temperature_scale",
        # MLA's query compression: a weight shape only (the cache holds the KV latent).
        "attention.q_lora_rank",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "router_logit_softcapping",
        "logit_scale",
        "embedding_scale",
        "residual_scale",
        "use_parallel_residual",
        "tensor_data_layout",
        "pooling_type",
        "decoder_start_token_id",
        "no_rope_layer_step",
        # Mamba's dt projection rank and its B/C/dt norms: weights only (Mamba2 and Gated DeltaNet read
        # time_step_rank as their head count, and then it counts as read).
        "ssm.time_step_rank",
        "ssm.dt_b_c_rms",
        "swin_norm",
    }
)
HARMLESS_PREFIXES = ("rope.",)


# ----------------------------------------------------------------------------------------------------------
# Typed, accounted lookups


@dataclass
class Meta:
    """Typed lookups of ``<arch>.`` keys; every lookup is recorded so the unread keys can be named."""

    model: str
    arch: str
    data: dict[str, Value]
    read: set[str] = field(default_factory=set)

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def get(self, name: str) -> Value | None:
        key = self.key(name)
        self.read.add(key)
        return self.data.get(key)

    def has(self, name: str) -> bool:
        return self.key(name) in self.data

    def error(self, quantity: str, name: str, problem: str) -> ConfigError:
        return ConfigError(self.model, quantity, (self.key(name),), problem)

    def _int(self, quantity: str, name: str, value: Value, minimum: int, maximum: int = MAX_COUNT) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            shown = value.type_name if isinstance(value, GgufArray) else f"{value!r}"
            raise self.error(quantity, name, f"{shown} ({type(value).__name__}), expected a whole number")
        if value < minimum:
            raise self.error(quantity, name, f"{value}, must be at least {minimum}")
        if value > maximum:
            raise self.error(quantity, name, f"{value:,}, more than kvplan accepts ({maximum:,})")
        return value

    def integer(
        self, quantity: str, name: str, *, minimum: int = 1, default: int | None = None, maximum: int = MAX_COUNT
    ) -> int:
        value = self.get(name)
        if value is None:
            if default is None:
                raise self.error(quantity, name, "missing")
            return default
        return self._int(quantity, name, value, minimum, maximum)

    def optional_integer(self, quantity: str, name: str, *, minimum: int = 1) -> int | None:
        value = self.get(name)
        return None if value is None else self._int(quantity, name, value, minimum)

    def per_layer(
        self,
        quantity: str,
        name: str,
        layers: int,
        default: Sequence[int],
        *,
        minimum: int = 0,
        maximum: int = MAX_COUNT,
    ) -> list[int]:
        """A scalar for every layer, or one value per layer (llama.cpp's ``get_key_or_arr``)."""
        value = self.get(name)
        if value is None:
            return list(default)
        if not isinstance(value, GgufArray):
            return [self._int(quantity, name, value, minimum, maximum)] * layers
        if value.values is None:
            raise self.error(quantity, name, f"{value.type_name} of {value.count:,} items was not read")
        if value.count != layers:
            raise self.error(quantity, name, f"has {value.count} entries for {layers} layers")
        return [self._int(quantity, name, v, minimum, maximum) for v in value.values]

    def flags(self, quantity: str, name: str, layers: int) -> list[bool] | None:
        """A per-layer bool array, or None when absent."""
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, GgufArray) or value.values is None:
            raise self.error(quantity, name, "expected an array of one bool per layer")
        if value.count != layers:
            raise self.error(quantity, name, f"has {value.count} entries for {layers} layers")
        if not all(isinstance(v, bool) or v in (0, 1) for v in value.values):
            raise self.error(quantity, name, "expected bools")
        return [bool(v) for v in value.values]

    def unread(self) -> tuple[str, ...]:
        """``<arch>.`` keys present that no rule read and that are not declared harmless."""
        prefix = self.arch + "."
        out = []
        for key in self.data:
            if not key.startswith(prefix) or key in self.read:
                continue
            rest = key[len(prefix) :]
            if rest in HARMLESS_KEYS or rest.startswith(HARMLESS_PREFIXES):
                continue
            out.append(key)
        return tuple(out)


# ----------------------------------------------------------------------------------------------------------
# The shape every rule starts from


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: list[int]
    kv_heads: list[int]
    #: K / V head dims (0 when the model has no attention heads).
    k_dim: int
    v_dim: int


def read_shape(m: Meta, rules: list[str]) -> Shape:
    layers = m.integer("layers", "block_count", maximum=MAX_LAYERS)
    hidden = m.integer("hidden size", "embedding_length")
    heads = m.per_layer("query heads", "attention.head_count", layers, [0] * layers, maximum=MAX_HEADS)
    # llama-model.cpp load_hparams: "n_head_kv is optional, default to n_head".
    kv_heads = m.per_layer("KV heads", "attention.head_count_kv", layers, heads, maximum=MAX_HEADS)
    if not m.has("attention.head_count_kv") and any(heads):
        rules.append("no head_count_kv: KV heads = query heads (llama.cpp's default)")
    for i, (h, g) in enumerate(zip(heads, kv_heads, strict=True)):
        if g and h % g:
            raise m.error("KV heads", "attention.head_count_kv", f"layer {i}: {g} KV heads do not divide {h} heads")
    first = heads[0] if heads else 0
    if not first:
        # "non-transformer models do not have attention heads": n_embd_head_k = n_embd_head_v = 0.
        return Shape(layers, hidden, heads, kv_heads, 0, 0)
    default = hidden // first if hidden % first == 0 else None
    k_dim = _head_dim(m, "attention.key_length", default, hidden, first)
    v_dim = _head_dim(m, "attention.value_length", default, hidden, first)
    return Shape(layers, hidden, heads, kv_heads, k_dim, v_dim)


def _head_dim(m: Meta, name: str, default: int | None, hidden: int, heads: int) -> int:
    value = m.optional_integer("head dim", name)
    if value is not None:
        return value
    if default is None:
        raise m.error("head dim", name, f"missing, and embedding_length {hidden} is not divisible by {heads} heads")
    return default


# ----------------------------------------------------------------------------------------------------------
# Recurrent state (llama-hparams.cpp n_embd_r / n_embd_s)


def _ssm(m: Meta) -> tuple[int, int, int, int]:
    kernel = m.integer("ssm conv kernel", "ssm.conv_kernel", minimum=2)
    inner = m.integer("ssm inner size", "ssm.inner_size")
    state = m.integer("ssm state size", "ssm.state_size")
    groups = m.integer("ssm group count", "ssm.group_count", minimum=0, default=0)
    return kernel, inner, state, groups


def mamba1_state(m: Meta) -> tuple[StateTensor, ...]:
    # Mamba (v1), Jamba: the conv keeps kernel - 1 inputs of d_inner channels; the SSM state is d_inner x d_state.
    kernel, inner, state, groups = _ssm(m)
    conv = inner + 2 * groups * state
    return (StateTensor("conv", (conv, kernel - 1)), StateTensor("ssm", (inner, state)))


def mamba2_state(m: Meta) -> tuple[StateTensor, ...]:
    # Mamba2 (Nemotron-H, Granite 4 hybrids): ssm.time_step_rank is the head count, head_dim = d_inner / heads;
    # the conv runs over x, B and C (d_inner + 2 x n_group x d_state).
    kernel, inner, state, groups = _ssm(m)
    heads = m.integer("ssm heads", "ssm.time_step_rank")
    if inner % heads:
        raise m.error("ssm heads", "ssm.time_step_rank", f"{heads} heads do not divide inner size {inner}")
    conv = inner + 2 * groups * state
    return (StateTensor("conv", (conv, kernel - 1)), StateTensor("ssm", (heads, inner // heads, state)))


def gated_delta_net_state(m: Meta) -> tuple[StateTensor, ...]:
    # Qwen3-Next Gated DeltaNet as convert_hf_to_gguf writes it: state_size = key head dim, group_count = key
    # heads, time_step_rank = value heads, inner_size = value heads x value head dim. The conv runs over q, k, v
    # (inner + 2 x groups x state); the recurrent state is one key_dim x value_dim matrix per value head.
    kernel, inner, state, groups = _ssm(m)
    v_heads = m.integer("linear value heads", "ssm.time_step_rank")
    if inner % v_heads:
        raise m.error("linear value heads", "ssm.time_step_rank", f"{v_heads} do not divide inner size {inner}")
    conv = inner + 2 * groups * state
    return (StateTensor("conv", (conv, kernel - 1)), StateTensor("recurrent", (v_heads, state, inner // v_heads)))


# ----------------------------------------------------------------------------------------------------------
# Per-architecture rules: each returns the kind of every layer (and the window), or the layers themselves.


def _attention(i: int, s: Shape, window: int | None = None, kind: LayerKind = LayerKind.FULL) -> LayerSpec:
    if not s.kv_heads[i]:
        # A layer with no KV heads stores nothing (Nemotron-NAS / DeciLM no-op attention: n_embd_k_gqa = 0).
        return LayerSpec(index=i, kind=LayerKind.NONE, q_heads=s.heads[i])
    return attention_layer(i, s.heads[i], s.kv_heads[i], s.k_dim, v_head_dim=s.v_dim, kind=kind, window=window)


def swa_layers(s: Shape, pattern: int) -> list[bool]:
    # llama-hparams.cpp set_swa_pattern(n): layer il slides when il % n < n - 1 (n = 0: every layer slides).
    return [pattern == 0 or il % pattern < pattern - 1 for il in range(s.layers)]


@dataclass(frozen=True)
class Swa:
    """How an architecture slides: the llama.cpp default pattern and window, and whether the window key is required."""

    pattern: int
    window: int | None = None
    required: bool = True
    kind: LayerKind = LayerKind.SLIDING


#: llama-model.cpp load_hparams, per architecture: hparams.set_swa_pattern(n) and n_swa.
#: gemma2: pattern 2, n_swa defaults to 4096 ("default value of gemma 2"); gemma3: 6; gemma3n: 5; gpt-oss
#: (LLM_ARCH_OPENAI_MOE): 2; cohere2: 4; llama4: chunked attention, 8192-token chunks, 3 chunked - 1 full,
#: unless the file sets sliding_window 0; exaone4: 4 with n_swa 4096 for the 64-layer 32B.
SWA_ARCHS: dict[str, Swa] = {
    "gemma2": Swa(2, 4096, required=False),
    "gemma3": Swa(6, required=False),
    "gemma3n": Swa(5),
    "gpt-oss": Swa(2),
    "cohere2": Swa(4),
    "llama4": Swa(4, 8192, required=False, kind=LayerKind.CHUNKED),
}


def sliding_rule(m: Meta, s: Shape, rules: list[str]) -> tuple[list[bool], int | None, LayerKind]:
    """Which layers slide, the window, and the kind (sliding or chunked)."""
    swa = SWA_ARCHS.get(m.arch)
    if m.arch == "exaone4":
        swa = Swa(4, 4096, required=False) if s.layers == 64 else None
    explicit = (
        m.flags("sliding layers", "attention.sliding_window_pattern", s.layers)
        if _is_array(m, "attention.sliding_window_pattern")
        else None
    )
    if swa is None and explicit is None:
        window = m.optional_integer("sliding window", "attention.sliding_window", minimum=0)
        if m.arch == "phi3" and window is not None:
            # LLM_ARCH_PHI3: llama.cpp turns SWA off (swa_type NONE, n_swa 0; ggml-org/llama.cpp#13676), so
            # Phi-3 runs full attention on every layer whatever sliding_window says.
            rules.append(f"phi3: sliding_window {window} ignored, as llama.cpp does (#13676)")
            return [False] * s.layers, None, LayerKind.FULL
        if window:
            # Another architecture with a window and no rule: not read, so it is reported, never applied.
            m.read.discard(m.key("attention.sliding_window"))
        return [False] * s.layers, None, LayerKind.FULL
    window = m.optional_integer("sliding window", "attention.sliding_window", minimum=0)
    if window is None:
        if swa is not None and swa.window is not None:
            window = swa.window
            rules.append(f"{m.arch}: sliding window {window} (llama.cpp's default; the file states none)")
        elif swa is not None and swa.required:
            raise m.error("sliding window", "attention.sliding_window", f"missing ({m.arch} slides)")
        else:
            rules.append(f"{m.arch}: no sliding_window, every layer full (llama.cpp: swa_type NONE)")
            return [False] * s.layers, None, LayerKind.FULL
    if window == 0:
        rules.append(f"{m.arch}: sliding_window 0, every layer full (llama.cpp: swa_type NONE)")
        return [False] * s.layers, None, LayerKind.FULL
    if m.arch == "llama4" and window != 8192:
        # LLM_ARCH_LLAMA4 sets n_swa = 8192 whenever the window is not 0, whatever the file states.
        rules.append(f"llama4: chunk 8192 (llama.cpp's fixed value; the file says {window})")
        window = 8192
    kind = swa.kind if swa is not None else LayerKind.SLIDING
    if explicit is not None:
        rules.append(f"sliding_window_pattern from the file: {sum(explicit)} of {s.layers} layers slide ({window})")
        return explicit, window, kind
    assert swa is not None
    rules.append(
        f"{m.arch}: one full layer in {swa.pattern}, the rest "
        f"{'chunked' if kind is LayerKind.CHUNKED else 'sliding'} ({window} tokens; llama.cpp set_swa_pattern)"
    )
    return swa_layers(s, swa.pattern), window, kind


def _is_array(m: Meta, name: str) -> bool:
    value = m.data.get(m.key(name))
    if value is not None and not isinstance(value, GgufArray):
        # A scalar pattern n means set_swa_pattern(n); no architecture in our rules writes it that way.
        m.read.add(m.key(name))
        raise m.error("sliding layers", name, f"{value!r}: expected one bool per layer")
    return value is not None


def attention_layers(m: Meta, s: Shape, rules: list[str]) -> list[LayerSpec]:
    """Pure attention models: full, sliding or chunked per layer, heads per layer."""
    if not any(s.heads):
        raise m.error("query heads", "attention.head_count", f"missing, and {m.arch} has no recurrent-layer rule")
    sliding, window, kind = sliding_rule(m, s, rules)
    layers = []
    for i in range(s.layers):
        layers.append(_attention(i, s, window, kind) if sliding[i] else _attention(i, s))
    return layers


def shared_kv(m: Meta, layers: list[LayerSpec], rules: list[str]) -> list[LayerSpec]:
    """Gemma 3n: layers from n_layer_kv_from_start on reuse the last earlier layer of their kind and store nothing.

    llama-kv-cache.cpp caches only the first 20 layers for LLM_ARCH_GEMMA3N ("n_layer_cache = 20", the E2B and
    E4B value); a file stating ``attention.shared_kv_layers`` gives n_layer - shared.
    """
    shared = m.optional_integer("shared KV layers", "attention.shared_kv_layers", minimum=0)
    first = 20 if shared is None else len(layers) - shared
    if first >= len(layers):
        return layers
    if first < 1:
        raise m.error("shared KV layers", "attention.shared_kv_layers", f"{shared} leaves no layer to share")
    out = list(layers)
    for i in range(first, len(layers)):
        producers = [p for p in layers[:first] if p.kind is layers[i].kind]
        if not producers:
            raise m.error("shared KV layers", "attention.shared_kv_layers", f"layer {i} has nothing to share")
        out[i] = LayerSpec(index=i, kind=LayerKind.SHARED, q_heads=layers[i].q_heads, shares_with=producers[-1].index)
    rules.append(f"gemma3n: layers {first}.. reuse earlier layers' KV (llama.cpp caches {first} layers)")
    return out


def mla_layers(m: Meta, s: Shape, rules: list[str]) -> list[LayerSpec]:
    """DeepSeek-V2/V3/R1, Kimi-K2 (arch deepseek2).

    GGUFs converted for llama.cpp's MLA cache (ggml-org/llama.cpp#12801) state key_length_mla / value_length_mla
    and cache one latent per token: key_length = kv_lora_rank + rope.dimension_count (576 = 512 + 64) with
    head_count_kv 1, V a view of it. Older conversions lack those keys, and llama.cpp then caches per-head K
    (key_length, 192) and V (value_length, 128) for head_count_kv heads.
    """
    rank = m.integer("kv_lora_rank", "attention.kv_lora_rank")
    k_mla = m.optional_integer("MLA key length", "attention.key_length_mla")
    v_mla = m.optional_integer("MLA value length", "attention.value_length_mla")
    if k_mla is None or v_mla is None:
        rules.append("deepseek2 without key_length_mla (an older conversion): llama.cpp caches per-head K and V")
        return [_attention(i, s) for i in range(s.layers)]
    rope = m.integer("rope dims", "rope.dimension_count")
    if s.k_dim != rank + rope or s.v_dim != rank:
        raise m.error(
            "MLA latent",
            "attention.key_length",
            f"key_length {s.k_dim} / value_length {s.v_dim}, expected {rank + rope} / {rank} "
            f"(kv_lora_rank {rank} + rope {rope})",
        )
    if any(g != 1 for g in s.kv_heads):
        raise m.error("MLA latent", "attention.head_count_kv", "an MLA conversion has one KV head")
    rules.append(f"MLA latent {rank} + {rope} (key_length_mla {k_mla}, value_length_mla {v_mla})")
    return [mla_layer(i, s.heads[i], rank, rope) for i in range(s.layers)]


def _state_layer(index: int, state: tuple[StateTensor, ...]) -> LayerSpec:
    return LayerSpec(index=index, kind=LayerKind.STATE, state=state)


def recurrent_layers(m: Meta, s: Shape, rules: list[str]) -> list[LayerSpec]:
    """Mamba / Mamba2 (llm_arch_is_recurrent): every layer keeps a fixed state."""
    state = mamba1_state(m) if m.arch == "mamba" else mamba2_state(m)
    rules.append(f"{m.arch}: every layer keeps a fixed SSM state")
    return [_state_layer(i, state) for i in range(s.layers)]


def kv_zero_hybrid(m: Meta, s: Shape, rules: list[str]) -> list[LayerSpec]:
    """Jamba, Granite-4 hybrids, Nemotron-H, PLaMo 2: a layer is recurrent iff its head_count_kv is 0
    (llama-model.cpp: ``recurrent_layer_arr[i] = n_head_kv(i) == 0``). Nemotron-H also needs
    feed_forward_length 0: a layer with no KV heads and an MLP width is an MLP block and caches nothing."""
    state = mamba1_state(m) if m.arch == "jamba" else mamba2_state(m)
    ffn = m.per_layer("FFN width", "feed_forward_length", s.layers, [0] * s.layers) if m.arch == "nemotron_h" else None
    layers = []
    for i in range(s.layers):
        if s.kv_heads[i]:
            layers.append(_attention(i, s))
        elif ffn is not None and ffn[i]:
            layers.append(LayerSpec(index=i, kind=LayerKind.NONE))
        else:
            layers.append(_state_layer(i, state))
    rules.append(f"{m.arch}: layers with head_count_kv 0 are recurrent (llama.cpp's convention)")
    return layers


def interval_hybrid(m: Meta, s: Shape, rules: list[str]) -> list[LayerSpec]:
    """Qwen3-Next: every full_attention_interval-th layer is full attention, the rest Gated DeltaNet
    (llama-model.cpp LLM_ARCH_QWEN3NEXT: recurrent_layer_arr[i] = (i + 1) % interval != 0, interval 4 when the
    file does not say)."""
    interval = m.integer("full attention interval", "full_attention_interval", default=4)
    state = gated_delta_net_state(m)
    rules.append(f"{m.arch}: one full-attention layer in {interval}, the rest Gated DeltaNet")
    return [_attention(i, s) if (i + 1) % interval == 0 else _state_layer(i, state) for i in range(s.layers)]


Rule = Callable[[Meta, Shape, list[str]], list[LayerSpec]]

#: Architectures with their own layer rule; every other architecture in :data:`PLAIN_ARCHS` is attention with
#: the heads and windows the shared keys state.
ARCH_RULES: dict[str, Rule] = {
    "deepseek2": mla_layers,
    "mamba": recurrent_layers,
    "mamba2": recurrent_layers,
    "jamba": kv_zero_hybrid,
    "granitehybrid": kv_zero_hybrid,
    "nemotron_h": kv_zero_hybrid,
    "plamo2": kv_zero_hybrid,
    "qwen3next": interval_hybrid,
}

#: Architectures llama.cpp runs as plain (GQA / MHA, optionally windowed) attention; their cache is what the
#: head and head-dim keys say. An architecture in neither table is read the same way, with a warning.
PLAIN_ARCHS = frozenset(
    {
        "llama",
        "llama4",
        "deci",
        "qwen",
        "qwen2",
        "qwen2moe",
        "qwen2vl",
        "qwen3",
        "qwen3moe",
        "qwen3vl",
        "qwen3vlmoe",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3n",
        "gpt-oss",
        "phi2",
        "phi3",
        "phimoe",
        "falcon",
        "starcoder",
        "starcoder2",
        "gpt2",
        "gptneox",
        "bloom",
        "mpt",
        "baichuan",
        "internlm2",
        "stablelm",
        "command-r",
        "cohere2",
        "olmo",
        "olmo2",
        "olmoe",
        "granite",
        "granitemoe",
        "mistral3",
        "exaone",
        "exaone4",
        "smollm3",
        "chatglm",
        "glm4",
        "glm4moe",
        "minicpm",
        "ernie4_5",
        "ernie4_5-moe",
        "hunyuan-moe",
        "dots1",
        "seed_oss",
        "arcee",
        "grok",
        "dbrx",
    }
)

#: GGUF file_type (llama.h llama_ftype) -> the model's dtype, for the few unquantized ones.
FILE_TYPE_DTYPES = {0: "float32", 1: "float16", 32: "bfloat16"}


def read_gguf_layout(model: GgufModel, name: str, source: str = "") -> CacheLayout:
    """Convert a GGUF's metadata and tensor infos into a layout."""
    arch = model.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ConfigError(name, "architecture", ("general.architecture",), "missing")
    m = Meta(name, arch, model.metadata)
    rules: list[str] = [f"GGUF architecture {arch!r}"]
    s = read_shape(m, rules)
    rule = ARCH_RULES.get(arch)
    if rule is not None:
        layers = rule(m, s, rules)
    else:
        if arch not in PLAIN_ARCHS:
            if any(not g for g in s.kv_heads) and any(s.heads):
                raise m.error("KV heads", "attention.head_count_kv", f"layers with 0 KV heads and no rule for {arch!r}")
            rules.append(f"no kvplan rule for architecture {arch!r}: read as plain attention from its head keys")
        layers = attention_layers(m, s, rules)
        if arch == "gemma3n":
            layers = shared_kv(m, layers, rules)
    main, mtp = split_nextn(m, layers, rules)
    max_context = m.optional_integer("context length", "context_length")
    warnings = [
        ConfigWarning(
            WarningKind.UNREAD_KEY,
            key,
            f"{name}: GGUF key {key!r} can shape the cache but no rule read it: the figure may be wrong",
        )
        for key in m.unread()
    ]
    if arch not in PLAIN_ARCHS and arch not in ARCH_RULES:
        message = (
            f"{name}: GGUF architecture {arch!r} is not one kvplan knows: read as plain attention from its "
            "head keys; the figure may be wrong"
        )
        warnings.insert(0, ConfigWarning(WarningKind.UNKNOWN_FAMILY, "general.architecture", message))
    file_type = model.metadata.get("general.file_type")
    return CacheLayout(
        model=name,
        family=arch,
        layers=tuple(main),
        hidden_size=s.hidden,
        dtype=FILE_TYPE_DTYPES.get(file_type) if isinstance(file_type, int) else None,
        max_context=max_context,
        mtp_layers=tuple(mtp),
        rules=tuple(rules),
        source=source,
        file_tensors=tuple(FileTensor(t.name, t.shape, t.ggml_type.name, t.nbytes) for t in model.tensors),
        warnings=tuple(warnings),
    )


def split_nextn(m: Meta, layers: list[LayerSpec], rules: list[str]) -> tuple[list[LayerSpec], list[LayerSpec]]:
    """GLM-4.5 / DeepSeek MTP: the last nextn_predict_layers blocks predict extra tokens. llama.cpp loads them but
    its main forward pass skips them ("Skip final NextN layer(s)", models/glm4-moe.cpp; llama-kv-cache.cpp
    n_layer_cache = n_layer - nextn_predict_layers), so they are reported apart, never added."""
    count = m.optional_integer("nextn layers", "nextn_predict_layers", minimum=0) or 0
    if not count:
        return layers, []
    if count >= len(layers):
        raise m.error("nextn layers", "nextn_predict_layers", f"{count} of {len(layers)} blocks leaves no main layer")
    rules.append(f"last {count} block(s) are multi-token-prediction layers, reported separately")
    return layers[:-count], layers[-count:]
