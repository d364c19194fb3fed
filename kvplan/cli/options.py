"""Shared options, declared once so every command spells and documents them the same way."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kvplan.engines.registry import defaults_help, engine_help
from kvplan.errors import Param

if TYPE_CHECKING:
    from kvplan.engines import EngineOptions


class Units(StrEnum):
    iec = "iec"
    si = "si"


# Shared options, declared once so every command spells and documents them the same way.
ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="Hub id (org/name), bundled or short name (gpt-oss-120b), config.json / params.json or folder.",
    ),
]


OptionalModelArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[MODEL]",
        help="Hub id (org/name), bundled or short name (gpt-oss-120b), config.json / params.json or folder; "
        "--model is the same. Default: as the command says.",
        show_default=False,
    ),
]


def one_model(positional: str | None, option: str | None) -> str | None:
    """The model named positionally or with the --model alias (both at once only if they agree)."""
    if positional is not None and option is not None and positional != option:
        from kvplan.errors import OptionError

        raise OptionError(Param.MODEL, f"two models given ({positional!r} and --model {option!r}): name one")
    return positional if positional is not None else option


CtxOpt = Annotated[
    str | None,
    typer.Option(
        "--ctx",
        "--max-model-len",
        help="Tokens per sequence: 4096, 4k (= 4,000) or 4K (= 4,096), "
        "as vLLM parses --max-model-len. Default: the model's context limit (max_position_embeddings, "
        "RoPE-scaled where the config says). "
        "pick-g and fit take a comma-separated list (4K,32K,128K).",
    ),
]


BatchOpt = Annotated[
    str | None,
    typer.Option(
        "--batch",
        "--max-num-seqs",
        help="Concurrent sequences (default 1; pick-g without --model: the scenario's). "
        "pick-g and fit take a comma-separated list (1,8,32).",
    ),
]


KvDtypeOpt = Annotated[
    str,
    typer.Option(
        "--kv-cache-dtype",
        help="auto (the model's serving dtype), float16, bfloat16, float32, fp8, "
        "fp8_e4m3, fp8_e5m2, int8, ... (vLLM's spellings).",
    ),
]


KvHeadsOpt = Annotated[
    int | None,
    typer.Option("--kv-heads", help="What-if: the same model with N KV heads (N divides the query heads)."),
]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (messages go to stderr).")]


UnitsOpt = Annotated[Units, typer.Option("--units", help="iec: GiB = 2^30; si: GB = 10^9.")]


RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit).")]


TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="HF_TOKEN", show_envvar=True, help="Hugging Face token for gated repos."),
]


EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help=f"Whose accounting: {engine_help()}.",
    ),
]


TpOpt = Annotated[
    int | None,
    typer.Option(
        "--tensor-parallel-size",
        "-tp",
        help="GPUs sharing each layer's KV heads (default: 1, or the GPU count of --gpu / --num-gpus).",
    ),
]


PpOpt = Annotated[int, typer.Option("--pipeline-parallel-size", "-pp", help="Pipeline stages splitting the layers.")]


BlockOpt = Annotated[
    int | None,
    typer.Option("--block-size", help=f"Tokens per page. Default: {defaults_help(Param.BLOCK_SIZE)}."),
]


BatchedOpt = Annotated[
    int | None,
    typer.Option(
        "--max-num-batched-tokens",
        help="vLLM: tokens per step; sliding layers keep this many extra. Default: "
        f"{defaults_help(Param.MAX_NUM_BATCHED_TOKENS)}.",
    ),
]


UbatchOpt = Annotated[
    int,
    typer.Option(
        "--ubatch-size", "-ub", help=f"n_ubatch (SWA cache padding). Default: {defaults_help(Param.N_UBATCH)}."
    ),
]


SwaFullOpt = Annotated[bool, typer.Option("--swa-full", help="llama.cpp: full-size cache for sliding layers.")]


CacheKOpt = Annotated[str | None, typer.Option("--cache-type-k", help="K dtype when it differs (llama.cpp style).")]


CacheVOpt = Annotated[str | None, typer.Option("--cache-type-v", help="V dtype when it differs (llama.cpp style).")]


GpuOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        help="A catalog name (a100-80g, h100; `kvplan gpus` lists them), a raw size (80GiB, 24GB), "
        "optionally with a count (8xh100).",
    ),
]


NumGpusOpt = Annotated[
    int | None, typer.Option("--num-gpus", help="GPUs in the tensor-parallel group (the count in --gpu 8xh100).")
]


UtilizationOpt = Annotated[
    float | None,
    typer.Option(
        "--gpu-memory-utilization",
        help="Share of each GPU's memory the engine may use (vLLM's gpu_memory_utilization, SGLang's "
        "mem_fraction_static, TensorRT-LLM's free_gpu_memory_fraction). Default: "
        f"{defaults_help(Param.UTILIZATION)}.",
        show_default=False,
    ),
]


ReserveOpt = Annotated[
    str | None,
    typer.Option(
        "--reserve",
        help="Per-GPU memory kept besides weights and KV (2GiB, 512MiB, 4GB), in place of the engine's own terms: "
        f"{defaults_help(Param.RESERVE_BYTES)}.",
    ),
]


WeightsDtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="Weight storage: auto (the checkpoint's quantization_config, else its 16-bit serving dtype), "
        "float16, bfloat16, float32, fp8, int8, int4, mxfp4, nvfp4.",
    ),
]


ChartOpt = Annotated[bool, typer.Option("--chart", help="Also draw memory against context for each G.")]


CheckOpt = Annotated[bool, typer.Option("--check", help="Exit 1 (with a line on stderr) when the plan does not fit.")]


GpuFileOpt = Annotated[
    list[Path] | None,
    typer.Option("--gpu-file", help="A YAML file of GPU entries that adds to or overrides the catalog (repeatable)."),
]


def _count(text: str | None, option: Param) -> int | None:
    from kvplan.plan import parse_count

    return None if text is None else parse_count(text, option)


def _counts(text: str | None, option: Param) -> list[int] | None:
    from kvplan.plan import parse_counts

    return None if text is None else parse_counts(text, option)


def _reserve(text: str | None) -> int | None:
    from kvplan.gpus import parse_bytes

    return None if text is None else parse_bytes(text, Param.RESERVE_BYTES)


KvMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--kv-memory",
        help="KV memory per GPU, e.g. 8GiB, 20GB or a bare byte count as engines print it (instead of --gpu).",
    ),
]


def _kv_memory(text: str | None) -> int | None:
    from kvplan.gpus import parse_bytes

    return None if text is None else parse_bytes(text, Param.KV_MEMORY, bare_bytes=True)


def engine_options(
    *,
    tensor_parallel_size: int | None = None,
    pipeline_parallel_size: int = 1,
    block_size: int | None = None,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    ubatch_size: int = 512,
    swa_full: bool = False,
    kv_unified: bool = True,
    enable_prefix_caching: bool = True,
    async_scheduling: bool | None = None,
    enforce_eager: bool = False,
    speculative_layers: int = 0,
    speculative_tokens: int | None = None,
    engine_version: str | None = None,
) -> EngineOptions:
    """The engine options the flags name (the one place that maps engine flags to EngineOptions)."""
    from kvplan.engines import EngineOptions

    return EngineOptions(
        tensor_parallel_size=tensor_parallel_size or 1,
        pipeline_parallel_size=pipeline_parallel_size,
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        n_ubatch=ubatch_size,
        swa_full=swa_full,
        kv_unified=kv_unified,
        enable_prefix_caching=enable_prefix_caching,
        async_scheduling=async_scheduling,
        enforce_eager=enforce_eager,
        speculative_layers=speculative_layers,
        speculative_tokens=speculative_tokens,
        engine_version=engine_version,
    )


PrefixOpt = Annotated[
    bool,
    typer.Option(
        "--enable-prefix-caching/--no-enable-prefix-caching",
        help="vLLM: prefix caching (default on) keeps Mamba states in align mode.",
    ),
]


UnifiedOpt = Annotated[
    bool, typer.Option("--kv-unified/--no-kv-unified", help="llama.cpp: one cache stream for all sequences.")
]


ImagesOpt = Annotated[
    int | None,
    typer.Option(
        "--images",
        help="Images each sequence carries, for models with cross-attention layers (Llama 3.2 Vision): "
        "0 = text only. Default: 1, stated in the output.",
    ),
]


AsyncOpt = Annotated[
    bool | None,
    typer.Option(
        "--async-scheduling/--no-async-scheduling",
        help="vLLM: two batches in flight (sliding layers keep twice the batched tokens). Default: the version's "
        "(on from 0.14.0).",
        show_default=False,
    ),
]


EagerOpt = Annotated[
    bool, typer.Option("--enforce-eager", help="vLLM: no CUDA graphs, so no CUDA-graph memory in the budget.")
]


SpecLayersOpt = Annotated[
    int,
    typer.Option(
        "--speculative-layers",
        help="Speculative decoding: N draft layers cached with the target (the model's MTP layers where it has "
        "them, else EAGLE-style layers of the target's attention shape).",
    ),
]


SpecTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--speculative-tokens",
        help="Tokens drafted per step (vLLM num_speculative_tokens, llama.cpp --spec-draft-n-max: its rollback rows).",
    ),
]


StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Refuse (exit 2) a config kvplan does not fully understand: a key that can shape the cache or the "
        "weights and no rule read, an unknown model_type, an assumed value. Without it these are warnings.",
    ),
]


MaxSeqsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-num-seqs",
        help=f"Sequences the engine batches (its activation peak). Default: {defaults_help(Param.MAX_NUM_SEQS)}.",
    ),
]


EngineVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--engine-version",
        help="The engine version whose rules apply (vLLM 0.11 to 0.33; default: the version kvplan models).",
    ),
]
