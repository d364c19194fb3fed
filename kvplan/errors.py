"""One exception hierarchy for kvplan, and the exit codes the CLI maps it to.

Every error a user can cause is a :class:`KvplanError`. Each class carries the fields its message needs
(model, field, flag, gpu ...) so the message names what was wrong and what would fix it. The CLI turns them
into one line on stderr and :attr:`KvplanError.exit_code`; nothing else in the package prints.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Process exit codes. Tested: scripts depend on them."""

    OK = 0
    #: A prediction was refuted (verify) or a plan does not fit (fit / pick-g with --check).
    REFUTED = 1
    #: The user's input was wrong: a flag, a model, a config, a file.
    USAGE = 2
    #: A rank of a multi-rank verify failed (raised, crashed or was killed); every rank was torn down.
    RANK_FAILED = 3


class KvplanError(Exception):
    """Base class: an error the user can act on. ``str(err)`` is the whole message."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def add_hint(self, hint: str) -> None:
        """Append what would help (a did-you-mean found after the error was raised) to the message."""
        self.message = f"{self.message}; {hint}"
        self.args = (self.message,)


class ConfigError(KvplanError):
    """A model config is missing a value kvplan needs, or holds one of the wrong type or range."""

    def __init__(self, model: str, quantity: str, keys: Sequence[str], problem: str) -> None:
        self.model = model
        self.quantity = quantity
        self.keys = tuple(keys)
        tried = ", ".join(self.keys) if self.keys else "(no key)"
        super().__init__(f"{model}: {quantity}: {problem} (keys tried: {tried})")


class NotUnderstoodError(KvplanError):
    """Strict reading: the reader did not fully understand a config (a key that can shape the cache or the
    weights and no rule read, an unknown family, an assumed value), so no figure is given."""

    def __init__(self, model: str, warnings: Sequence[str]) -> None:
        self.model = model
        self.warnings = tuple(warnings)
        lines = "\n".join(f"  {w}" for w in self.warnings)
        super().__init__(f"{model}: refused under strict reading, the figure may be wrong:\n{lines}")


class ConfigFileError(KvplanError):
    """A config file could not be read or is not a JSON object."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class FileReadError(ConfigFileError):
    """A file cannot be read as text: missing, not a regular file, too large, unreadable, or not UTF-8."""

    def __init__(self, path: str, problem: str) -> None:
        self.problem = problem
        super().__init__(path, problem)


class HubCacheError(KvplanError):
    """An entry of the local Hugging Face cache is broken (dangling link, garbled ref, unreadable blob)."""

    def __init__(self, model: str, path: str, problem: str) -> None:
        self.model = model
        self.path = path
        super().__init__(
            f"model {model!r}: the Hugging Face cache entry {path} {problem}; repair it by deleting "
            f"{_repo_folder(path)} (kvplan downloads the config again), or pass a local config.json path"
        )


def _repo_folder(path: str) -> str:
    """The ``models--org--name`` folder of a path inside the Hugging Face cache (the path itself otherwise)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.startswith("models--"):
            return "/".join(parts[: i + 1])
    return path


class HubError(KvplanError):
    """The Hugging Face Hub could not answer for a model: unreachable, too slow, rate limited, or broken."""

    def __init__(self, model: str, problem: str, advice: str) -> None:
        self.model = model
        self.problem = problem
        super().__init__(f"model {model!r}: {problem}; {advice}")


class ModelNotFoundError(KvplanError):
    """The model is neither a path, a bundled model, in the local Hugging Face cache, nor on the Hub."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        super().__init__(f"model {model!r}: {detail}")


class AmbiguousModelError(KvplanError):
    """A short model name stands for more than one bundled model."""

    def __init__(self, model: str, candidates: Sequence[str]) -> None:
        self.model = model
        self.candidates = tuple(candidates)
        super().__init__(
            f"model {model!r} could be any of {len(self.candidates)} bundled models: "
            f"{', '.join(self.candidates)}; pass one of these ids"
        )


class GatedModelError(KvplanError):
    """The Hub repository is gated or private and the request had no (or an insufficient) token."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r} is gated on the Hugging Face Hub: accept its licence on the model page, then "
            f"log in (`hf auth login`), set HF_TOKEN or pass {spell(Param.TOKEN)}; or pass a local config.json path"
        )


class OfflineError(KvplanError):
    """HF_HUB_OFFLINE is set and the config is not in the local cache."""

    def __init__(self, model: str, detail: str = "", *, revision: str | None = None, bundled: bool = False) -> None:
        self.model = model
        self.revision = revision
        extra = f" ({detail})" if detail else ""
        if bundled:
            # The model is bundled, but a revision was asked for: only the Hub (or its cache) has revisions.
            super().__init__(
                f"model {model!r}: revision {revision!r} is not in the local Hugging Face cache and the Hub cannot "
                f"be reached{extra}; the bundled config has no revisions: drop {spell(Param.REVISION)} to use it, or "
                "connect"
            )
            return
        super().__init__(
            f"model {model!r} is not bundled and not in the local Hugging Face cache, and the Hub cannot be "
            f"reached{extra}: unset HF_HUB_OFFLINE and connect, or pass a local config.json / params.json path"
        )


class Param(StrEnum):
    """The library parameters an :class:`OptionError` can be about, by their Python names. The core never spells a
    command-line flag for them: the CLI maps each to its flag in one table (kvplan/cli/flags.py)."""

    MODEL = "model"
    CTX = "ctx"
    BATCH = "batch"
    MAX_MODEL_LEN = "max_model_len"
    KV_CACHE_DTYPE = "kv_cache_dtype"
    K_DTYPE = "k_dtype"
    V_DTYPE = "v_dtype"
    KV_HEADS = "kv_heads"
    ENGINE = "engine"
    TENSOR_PARALLEL_SIZE = "tensor_parallel_size"
    PIPELINE_PARALLEL_SIZE = "pipeline_parallel_size"
    BLOCK_SIZE = "block_size"
    MAX_NUM_BATCHED_TOKENS = "max_num_batched_tokens"
    N_UBATCH = "n_ubatch"
    MAX_NUM_SEQS = "max_num_seqs"
    SPECULATIVE_LAYERS = "speculative_layers"
    SPECULATIVE_TOKENS = "speculative_tokens"
    ENGINE_VERSION = "engine_version"
    GPU = "gpu"
    NUM_GPUS = "num_gpus"
    UTILIZATION = "utilization"
    RESERVE_BYTES = "reserve_bytes"
    WEIGHTS_DTYPE = "weights_dtype"
    WEIGHTS_BYTES_PER_GPU = "weights_bytes_per_gpu"
    KV_MEMORY = "kv_memory"
    DEVICE = "device"
    MAX_BYTES = "max_bytes"
    REPEATS = "repeats"
    SCENARIO = "scenario"
    REVISION = "revision"
    IMAGES = "images"
    SAVE_GPU = "save_gpu"
    TOKEN = "token"
    #: Machine-readable output (the CLI's --json), which render's notes point to.
    JSON = "json"
    #: An environment variable, not an argument.
    HF_ENDPOINT = "HF_ENDPOINT"


#: How messages spell a parameter while a CLI command runs (kvplan/cli/flags.py's table); None outside one.
_SPELLING: ContextVar[Mapping[Param, str | None] | None] = ContextVar("kvplan_spelling", default=None)


def spell(param: Param) -> str:
    """How a message names ``param``: the flag inside a CLI command (the CLI installs its one table with
    :func:`spelling`), the parameter's own name for library callers. The core never writes a flag itself."""
    table = _SPELLING.get()
    return (table.get(param) if table else None) or param.value


@contextmanager
def spelling(table: Mapping[Param, str | None]) -> Iterator[None]:
    """Spell parameters as ``table`` says for the duration (the CLI wraps every command in it)."""
    token = _SPELLING.set(table)
    try:
        yield
    finally:
        _SPELLING.reset(token)


class OptionError(KvplanError):
    """A library argument (a command-line option, for the CLI) has an invalid value. ``param`` names it;
    ``problem`` says what is wrong and what would fix it. ``str(err)`` is ``param: problem``."""

    def __init__(self, param: Param, problem: str) -> None:
        self.param = param
        self.problem = problem
        super().__init__(f"{param.value}: {problem}")


class UnknownDtypeError(OptionError):
    """A KV-cache or weight dtype name kvplan does not know."""

    def __init__(self, param: Param, name: str, known: Sequence[str]) -> None:
        self.name = name
        super().__init__(param, f"unknown dtype {name!r}; choose one of: {', '.join(known)}")


class UnknownGPUError(KvplanError):
    """A GPU name that is not in the catalog (bundled or user file) and is not a raw size."""

    def __init__(self, name: str, suggestions: Sequence[str]) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = f"; closest: {', '.join(self.suggestions)}" if self.suggestions else ""
        super().__init__(
            f"{spell(Param.GPU)}: unknown GPU {name!r}{hint}. `kvplan gpus` lists the catalog; a raw size such as "
            f"{spell(Param.GPU)} 80GiB also works"
        )


class CatalogFileError(KvplanError):
    """A GPU catalog or scenario YAML file failed validation; carries ``field: message`` lines."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{path}: invalid catalog file:\n{lines}")


class TorchMissingError(KvplanError):
    """`verify` needs torch, which is an optional extra."""

    def __init__(self) -> None:
        super().__init__(
            'kvplan verify needs torch: pip install ".[verify]" from the kvplan checkout, or pip install torch '
            "(CPU-only: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        )


class TorchBrokenError(KvplanError):
    """torch is installed but cannot be imported (an OSError: its CUDA libraries are missing or mismatched)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"kvplan verify cannot import torch ({detail}): the torch install is broken; reinstall it for this "
            'machine (pip install --force-reinstall "kvplan[verify]") or use a CPU-only torch build'
        )


class DeviceUnavailableError(KvplanError):
    """The requested torch device does not exist on this machine."""

    def __init__(self, device: str, detail: str) -> None:
        self.device = device
        super().__init__(f"{spell(Param.DEVICE)} {device}: {detail}")


class RankFailedError(KvplanError):
    """A rank of a multi-rank verify failed for its own reasons; the launcher tore every other rank down."""

    exit_code = ExitCode.RANK_FAILED

    def __init__(self, rank: int, problem: str, torn_down: Sequence[int]) -> None:
        self.rank = rank
        self.problem = problem
        self.torn_down = tuple(torn_down)
        others = f"; ranks {', '.join(map(str, self.torn_down))} were torn down" if self.torn_down else ""
        super().__init__(f"rank {rank} failed: {problem}{others}")
