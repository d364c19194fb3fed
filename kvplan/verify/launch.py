"""Ranks of torch.distributed: start them (or join torchrun's), run one function on each, gather the results.

Started here (:func:`launch`), the launcher process

- hosts the rendezvous store on 127.0.0.1 (a TCPStore on port 0: the OS picks a free port, with no race),
- starts one process per rank with multiprocessing: ``forkserver`` on Linux (the server imports torch once, so
  N ranks start in about the time of one import; it never initialises CUDA, so CUDA is safe in every rank),
  ``spawn`` elsewhere,
- waits on each rank's pipe and exit; the first rank that fails for its own reasons (an exception, a non-zero
  exit, a signal) is reported as :class:`~kvplan.errors.RankFailedError`, and every rank is torn down:
  SIGTERM, a grace period, then SIGKILL, each process reaped,
- tears every rank down the same way on Ctrl-C or SIGTERM, then re-raises.

Each rank dies with its launcher: it watches a pipe only the launcher holds (EOF the moment the launcher is
gone, even unreaped) and, on Linux, asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG). A rank ignores
SIGINT (the launcher decides) and turns SIGTERM into an exception, so ``finally`` blocks free its memory.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR in the environment) :func:`run_in_group` joins
the group torchrun made instead; torchrun then owns teardown.

Results travel as pickles: over a gloo group with all_gather_object (rank 0 hands the list to the launcher),
so NCCL only ever carries tensors. Nothing here knows what a rank computes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from kvplan.errors import RankFailedError
from kvplan.verify.common import import_torch

R = TypeVar("R")

#: Seconds between SIGTERM and SIGKILL when tearing ranks down.
GRACE_S = 3.0
#: After the first failure, how long to wait for the other ranks' reports, to name the one that failed first.
SETTLE_S = 1.0
#: How long a rank waits for the others at the rendezvous and in a collective.
RENDEZVOUS_S = 120.0
COLLECTIVE_S = 1800.0

#: How gloo and NCCL word a collective that broke because a peer went away: a consequence, not a cause.
_PEER_GONE = ("connection closed by peer", "connection reset by peer", "remote worker", "broken pipe")


@dataclass(frozen=True)
class RankEnv:
    """Where one process sits in the group."""

    rank: int
    world_size: int
    local_rank: int
    #: "gloo" or "nccl".
    backend: str
    #: "forkserver", "spawn" (started by kvplan) or "torchrun".
    launcher: str


#: A rank's progress, forwarded to the launcher: (task, done, total).
RankProgress = Callable[[str, int, int], None]
#: The function every rank runs: (where it sits, the job, a progress callback) -> its result (picklable).
RankTarget = Callable[[RankEnv, Any, RankProgress | None], Any]
#: The launcher's view of progress: (rank, task, done, total).
LaunchProgress = Callable[[int, str, int, int], None]


def torchrun_env(backend: str) -> RankEnv | None:
    """The rank torchrun (or any launcher that sets the torch.distributed environment) gave this process."""
    names = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    if not all(os.environ.get(n) for n in names):
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    return RankEnv(rank, world, local, backend, "torchrun")


def default_start_method() -> str:
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


# ----------------------------------------------------------------------------------------------------------
# Inside a rank


class _Terminated(BaseException):
    """SIGTERM in a rank: unwinds like KeyboardInterrupt, so every ``finally`` frees what it holds."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _die_with_launcher(alive: Any) -> None:
    """Exit the moment the launcher is gone: ``alive`` is the read end of a pipe only the launcher holds."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux): a spawned rank's parent dies
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        try:
            alive.poll(None)
        finally:
            os._exit(1)

    threading.Thread(target=watch, name="kvplan-launcher-watch", daemon=True).start()


def _loopback_interface() -> str | None:
    """The loopback interface's name (lo, lo0), so gloo and NCCL talk over 127.0.0.1 between local ranks."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((n for n in names if n.startswith("lo")), None)


def _secondary(err: BaseException) -> bool:
    text = str(err).lower()
    return any(words in text for words in _PEER_GONE)


def _report(conn: Any, message: tuple[Any, ...]) -> None:
    with contextlib.suppress(OSError, ValueError):  # the launcher is gone or tearing down
        conn.send(message)


def _failure(err: BaseException) -> tuple[Any, ...]:
    first = (str(err).strip().splitlines() or [""])[0]
    return ("error", f"{type(err).__name__}: {first}" if first else type(err).__name__, _secondary(err))


def _object_group(torch: Any, backend: str) -> Any:
    """A gloo group for pickled results (the default group itself when that is gloo), as vLLM keeps a gloo
    ``cpu_group`` beside its NCCL group (vllm/distributed/parallel_state.py, GroupCoordinator)."""
    dist = torch.distributed
    return None if backend == "gloo" else dist.new_group(backend="gloo")


def run_in_group(target: RankTarget, job: Any, env: RankEnv, progress: RankProgress | None = None) -> list[Any]:
    """Join the process group (env:// under torchrun), run ``target`` and all-gather every rank's result."""
    torch = import_torch()
    dist = torch.distributed
    kwargs: dict[str, Any] = {"timeout": timedelta(seconds=COLLECTIVE_S)}
    if not dist.is_initialized():
        dist.init_process_group(env.backend, rank=env.rank, world_size=env.world_size, **kwargs)
    try:
        return _run_and_gather(torch, target, job, env, progress)
    finally:
        dist.destroy_process_group()


def _run_and_gather(torch: Any, target: RankTarget, job: Any, env: RankEnv, progress: RankProgress | None) -> list[Any]:
    dist = torch.distributed
    group = _object_group(torch, env.backend)
    result = target(env, job, progress)
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, result, group=group)
    return gathered


def _rank_main(
    env: RankEnv, store_port: int, target: RankTarget, job: Any, conn: Any, alive: Any
) -> None:  # pragma: no cover - runs in the rank's process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher decides, and tears every rank down
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _die_with_launcher(alive)
        lo = _loopback_interface()
        if lo is not None:  # every rank is on this machine: keep the traffic on the loopback
            os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
            os.environ.setdefault("NCCL_SOCKET_IFNAME", lo)
        _report(conn, ("result", _join_and_run(env, store_port, target, job, conn)))
        conn.close()
    except _Terminated:
        os._exit(143)


def _join_and_run(env: RankEnv, store_port: int, target: RankTarget, job: Any, conn: Any) -> list[Any] | None:
    """Connect to the launcher's store, join the group, run; on a failure report it at once (leaving the group
    may wait on peers that wait on this rank) and exit."""

    def progress(task: str, done: int, total: int) -> None:
        _report(conn, ("progress", task, done, total))

    torch = import_torch()
    dist = torch.distributed
    try:
        store = dist.TCPStore(
            "127.0.0.1", store_port, env.world_size, is_master=False, timeout=timedelta(seconds=RENDEZVOUS_S)
        )
        dist.init_process_group(
            env.backend,
            store=store,
            rank=env.rank,
            world_size=env.world_size,
            timeout=timedelta(seconds=COLLECTIVE_S),
        )
        gathered = _run_and_gather(torch, target, job, env, progress)
    except _Terminated:
        raise
    except BaseException as err:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _report(conn, (*_failure(err), traceback.format_exc()))
        os._exit(1)
    dist.destroy_process_group()
    return gathered if env.rank == 0 else None


# ----------------------------------------------------------------------------------------------------------
# The launcher


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def teardown(procs: Sequence[Any], grace_s: float = GRACE_S) -> None:
    """SIGTERM every live rank, wait up to ``grace_s`` seconds, SIGKILL what is left, reap them all."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(5)


@dataclass(frozen=True)
class _Failure:
    rank: int
    problem: str
    secondary: bool


class _Supervisor:
    """Reads every rank's pipe and watches every rank's exit."""

    def __init__(self, procs: Sequence[Any], conns: Sequence[Any], progress: LaunchProgress | None) -> None:
        self.procs = procs
        self.conns = conns
        self.progress = progress
        self.pending = {c: r for r, c in enumerate(conns)}
        self.running = {p.sentinel: r for r, p in enumerate(procs)}
        self.failures: list[_Failure] = []
        self.gathered: list[Any] | None = None

    def read(self, rank: int) -> None:
        """Every message waiting on the rank's pipe."""
        conn = self.conns[rank]
        while conn in self.pending and conn.poll():
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                self.pending.pop(conn)
                return
            if msg[0] == "progress":
                if self.progress is not None:
                    self.progress(rank, msg[1], msg[2], msg[3])
                continue
            self.pending.pop(conn)
            if msg[0] == "error":
                self.failures.append(_Failure(rank, msg[1], msg[2]))
            elif rank == 0:
                self.gathered = msg[1]

    def exited(self, rank: int) -> None:
        self.procs[rank].join()
        self.read(rank)
        code = self.procs[rank].exitcode
        if code != 0 and not any(f.rank == rank for f in self.failures):
            self.failures.append(_Failure(rank, f"{_exit_text(code)} before it reported", False))

    def run(self) -> list[Any]:
        from multiprocessing.connection import wait

        deadline: float | None = None
        while self.running and (deadline is None or time.monotonic() < deadline):
            timeout = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            for obj in wait([*self.pending, *self.running], timeout=timeout):
                if obj in self.running:
                    self.exited(self.running.pop(obj))
                elif obj in self.pending:
                    self.read(self.pending[obj])
            if self.failures and deadline is None:
                deadline = time.monotonic() + SETTLE_S
        if self.failures:
            first = next((f for f in self.failures if not f.secondary), self.failures[0])
            others = sorted({r for r in range(len(self.procs)) if r != first.rank})
            raise RankFailedError(first.rank, first.problem, others)
        if self.gathered is None:
            raise RankFailedError(0, "exited without its gathered results", [])
        return self.gathered


def _parent_terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def launch(
    target: RankTarget,
    job: Any,
    world_size: int,
    *,
    backend: str = "gloo",
    start_method: str | None = None,
    preload: Sequence[str] = (),
    on_progress: LaunchProgress | None = None,
    grace_s: float = GRACE_S,
) -> list[Any]:
    """Start ``world_size`` ranks, run ``target(env, job, progress)`` on each, and return every rank's result
    (index = rank). A failing rank raises RankFailedError after every rank is torn down; so does Ctrl-C (the
    KeyboardInterrupt is re-raised). ``preload``: modules the forkserver imports once for every rank.

    ``target`` must be importable by name (a module-level function), and a script that calls this needs the
    usual ``if __name__ == "__main__":`` guard (spawned ranks import the main module).
    """
    import multiprocessing as mp

    method = start_method or default_start_method()
    ctx: Any = mp.get_context(method)
    if method == "forkserver":
        from multiprocessing import forkserver

        ctx.set_forkserver_preload(["torch", "torch.distributed", *preload])
        forkserver.ensure_running()  # it imports torch while this process does the same
    torch = import_torch()
    store = torch.distributed.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False)
    procs: list[Any] = []
    conns: list[Any] = []
    alive_recv, alive_send = ctx.Pipe(duplex=False)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None
    if in_main:
        signal.signal(signal.SIGTERM, _parent_terminated)
    try:
        for rank in range(world_size):
            recv, send = ctx.Pipe(duplex=False)
            env = RankEnv(rank, world_size, rank, backend, method)
            proc = ctx.Process(
                target=_rank_main,
                args=(env, store.port, target, job, send, alive_recv),
                name=f"kvplan-rank-{rank}",
                daemon=True,
            )
            proc.start()
            send.close()
            procs.append(proc)
            conns.append(recv)
        alive_recv.close()
        return _Supervisor(procs, conns, on_progress).run()
    finally:
        teardown(procs, grace_s)
        for conn in conns:
            conn.close()
        alive_send.close()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        del store
