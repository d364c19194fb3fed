"""What every part of verify shares: units, the progress callback, the torch import."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kvplan.errors import TorchBrokenError, TorchMissingError

if TYPE_CHECKING:
    pass


MiB = 2**20


GiB = 2**30


#: ``on_progress(task, done, total)``: ``task`` names the plan and the phase ("Llama-2-7B G=32",
#: "Llama-2-7B G=32: probe batch 4", "Llama-2-7B G=32: timing"); ``done`` of ``total`` layers (or repeats).
ProgressCallback = Callable[[str, int, int], None]


def import_torch() -> Any:
    """torch, or :class:`~kvplan.errors.TorchMissingError` naming the verify extra and a CPU-only torch."""
    try:
        import torch
    except ImportError:
        raise TorchMissingError() from None
    except OSError as err:  # a broken install: CUDA libraries missing or the wrong version (libcudart.so ...)
        raise TorchBrokenError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from None
    return torch
