"""Functions the launcher tests run on every rank (a module of its own: ranks import it by name, not pytest)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from kvplan.verify.launch import RankEnv, RankProgress


def _pid(env: RankEnv, folder: str) -> None:
    Path(folder, f"rank{env.rank}.pid").write_text(str(os.getpid()))


def rank_sum(env: RankEnv, folder: str, progress: RankProgress | None) -> dict[str, int]:
    """all_reduce of rank + 1 over the group: every rank sees 1 + 2 + ... + world."""
    import torch

    _pid(env, folder)
    if progress is not None:
        progress(f"rank {env.rank}", 1, 1)
    total = torch.tensor([env.rank + 1], dtype=torch.int64)
    torch.distributed.all_reduce(total)
    return {"rank": env.rank, "pid": os.getpid(), "sum": int(total.item())}


def hold_memory(env: RankEnv, folder: str, progress: RankProgress | None) -> None:
    """Hold 16 MiB and wait forever (until the launcher tears the rank down)."""
    import torch

    held = torch.empty(16 << 20, dtype=torch.uint8)
    held.fill_(1)
    _pid(env, folder)
    while True:
        time.sleep(0.05)


def raise_on_rank_1(env: RankEnv, folder: str, progress: RankProgress | None) -> int:
    """Rank 1 raises; the others wait for it in a barrier, whose peers then vanish."""
    import torch

    _pid(env, folder)
    if env.rank == 1:
        time.sleep(0.2)
        raise RuntimeError("rank 1 broke on purpose")
    torch.distributed.barrier()
    return env.rank


def killed_on_rank_1(env: RankEnv, folder: str, progress: RankProgress | None) -> int:
    """Rank 1 dies by SIGKILL (no exception, no report); the others wait in a barrier."""
    import torch

    _pid(env, folder)
    if env.rank == 1:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    torch.distributed.barrier()
    return env.rank
