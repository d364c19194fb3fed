"""The one table from library parameters to how the CLI spells them. Library errors carry a
:class:`~kvplan.errors.Param`; the CLI names the flag (tests/test_flags.py checks every flag here exists, and
that every flag any message names exists)."""

from __future__ import annotations

from kvplan.errors import OptionError, Param

#: Param -> the flag (or environment variable) a CLI user sets; None for parameters only the library has.
FLAGS: dict[Param, str | None] = {
    Param.MODEL: "--model",
    Param.CTX: "--ctx",
    Param.BATCH: "--batch",
    Param.MAX_MODEL_LEN: "--max-model-len",
    Param.KV_CACHE_DTYPE: "--kv-cache-dtype",
    Param.K_DTYPE: "--cache-type-k",
    Param.V_DTYPE: "--cache-type-v",
    Param.KV_HEADS: "--kv-heads",
    Param.ENGINE: "--engine",
    Param.TENSOR_PARALLEL_SIZE: "--tensor-parallel-size",
    Param.PIPELINE_PARALLEL_SIZE: "--pipeline-parallel-size",
    Param.BLOCK_SIZE: "--block-size",
    Param.MAX_NUM_BATCHED_TOKENS: "--max-num-batched-tokens",
    Param.N_UBATCH: "--ubatch-size",
    Param.MAX_NUM_SEQS: "--max-num-seqs",
    Param.SPECULATIVE_LAYERS: "--speculative-layers",
    Param.SPECULATIVE_TOKENS: "--speculative-tokens",
    Param.ENGINE_VERSION: "--engine-version",
    Param.GPU: "--gpu",
    Param.NUM_GPUS: "--num-gpus",
    Param.UTILIZATION: "--gpu-memory-utilization",
    Param.RESERVE_BYTES: "--reserve",
    Param.WEIGHTS_DTYPE: "--dtype",
    Param.WEIGHTS_BYTES_PER_GPU: None,
    Param.KV_MEMORY: "--kv-memory",
    Param.DEVICE: "--device",
    Param.MAX_BYTES: "--max-bytes",
    Param.REPEATS: None,
    Param.SCENARIO: None,
    Param.REVISION: "--revision",
    Param.IMAGES: "--images",
    Param.SAVE_GPU: "--save-gpu",
    Param.TOKEN: "--token",
    Param.JSON: "--json",
    Param.HF_ENDPOINT: "HF_ENDPOINT",
}


def spelled(param: Param) -> str:
    """How the CLI names ``param``: its flag, else the parameter's own name."""
    return FLAGS[param] or param.value


def cli_message(err: Exception) -> str:
    """The one-line message the CLI prints for a library error: an OptionError names the flag."""
    if isinstance(err, OptionError):
        return f"{spelled(err.param)}: {err.problem}"
    return str(err)
