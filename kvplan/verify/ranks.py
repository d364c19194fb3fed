"""Verify a tensor- and pipeline-parallel plan on real ranks of torch.distributed, one process per GPU.

Rank r of a tp x pp plan is tensor-parallel rank ``r % tp`` of pipeline stage ``r // tp`` (tensor parallelism
innermost, as vLLM lays out its groups: vllm/distributed/parallel_state.py initialize_model_parallel). Each
rank allocates its own shard in the engine's layout: the layers of its stage (the engine's split_layers), the
KV heads the engine gives one rank (H_kv / tp, or one whole head copied tp / H_kv times when tp > H_kv), the
MLA latent whole, state split; and the weights of its stage, split over tp. It measures and checks what it
holds exactly as a single-device verify does (:func:`kvplan.verify.run_verify` on a plan for its stage),
sums its cache bytes with the others over the backend (all_reduce: NCCL on CUDA, gloo on CPU), and rank 0
gathers every rank's report.

The ranks come from torchrun when it started this process, else from :mod:`kvplan.verify.launch`.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kvplan.engines import get_engine, heads_per_rank
from kvplan.errors import DeviceUnavailableError, OptionError, Param, spell
from kvplan.layout import LayerKind, LayerSpec
from kvplan.units import exact_and_human
from kvplan.verify.common import ProgressCallback, import_torch
from kvplan.verify.device import _meminfo, _sysconf, open_device, parse_device
from kvplan.verify.entry import run_verify
from kvplan.verify.launch import RankEnv, RankProgress, default_start_method, launch, run_in_group, torchrun_env
from kvplan.verify.plans import VerifyPlan, predict
from kvplan.verify.results import Check, PlanResult, VerifyReport

# ----------------------------------------------------------------------------------------------------------
# What each rank holds (pure: no torch)


@dataclass(frozen=True)
class RankShare:
    """One rank's share of a tp x pp plan: where it sits, the layers and heads it holds, its own plan."""

    rank: int
    tp_rank: int
    pp_rank: int
    #: The layer indices of its pipeline stage.
    layers: tuple[int, ...]
    #: What it holds of each kind of layer, in words ("KV heads 2-3 of 8", "the whole MLA latent").
    holds: tuple[str, ...]
    #: The plan this rank verifies: its stage's layers, sharded, with its stage's weights.
    plan: VerifyPlan

    @property
    def layer_range(self) -> str:
        return _ranges(self.layers)


def _ranges(values: Sequence[int]) -> str:
    """0,1,2,5 -> '0-2, 5'."""
    out: list[str] = []
    items = sorted(values)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ", ".join(out) or "none"


def kv_heads_held(kv_heads: int, tp: int, tp_rank: int) -> str:
    """Which KV heads tensor-parallel rank ``tp_rank`` of ``tp`` holds: a slice of H_kv / tp heads, or, when tp
    > H_kv, one whole head shared by tp / H_kv ranks (vLLM QKVParallelLinear.weight_loader: shard_id = tp_rank
    // num_kv_head_replicas, vllm/model_executor/layers/linear.py)."""
    held = heads_per_rank(kv_heads, tp)
    if tp <= kv_heads:
        first = tp_rank * held
        heads = f"{first}" if held == 1 else f"{first}-{first + held - 1}"
        return f"KV head{'s' if held > 1 else ''} {heads} of {kv_heads}"
    copies = tp // kv_heads
    return f"KV head {tp_rank // copies} of {kv_heads} (copy {tp_rank % copies + 1} of {copies})"


def _holds(layers: Sequence[LayerSpec], tp: int, tp_rank: int) -> tuple[str, ...]:
    """What the rank holds of each kind of layer in its stage (the layout's specs, before sharding)."""
    out: dict[str, None] = {}
    for layer in layers:
        if layer.kind.has_kv_heads and layer.k_heads:
            out[kv_heads_held(layer.k_heads, tp, tp_rank)] = None
        elif layer.kind is LayerKind.MLA:
            out[f"the whole MLA latent{' (on every one of the ' + str(tp) + ' ranks)' if tp > 1 else ''}"] = None
        elif layer.kind is LayerKind.STATE:
            out[f"1/{tp} of the recurrent state" if tp > 1 else "the recurrent state"] = None
    return tuple(out)


def rank_shares(plan: VerifyPlan) -> tuple[RankShare, ...]:
    """Every rank's share of the plan, rank order (validated: a tp the heads cannot share is an OptionError)."""
    engine = get_engine(plan.engine)
    engine.validate(plan.layout, plan.opts)
    tp, pp = plan.opts.tensor_parallel_size, plan.opts.pipeline_parallel_size
    stages = [tuple(layer for layer in stage) for stage in _unsharded_stages(plan)]
    shares = []
    for pp_rank, stage in enumerate(stages):
        weights = plan.stage_weights[pp_rank] if plan.stage_weights else plan.weights_bytes
        for tp_rank in range(tp):
            rank = pp_rank * tp + tp_rank
            note = _rank_note(plan, pp_rank, pp)
            rank_plan = replace(
                plan, name=f"rank {rank}", stage=pp_rank, weights_bytes=weights, note=note, stage_weights=()
            )
            indices = tuple(layer.index for layer in stage if layer.index >= 0)
            shares.append(RankShare(rank, tp_rank, pp_rank, indices, _holds(stage, tp, tp_rank), rank_plan))
    return tuple(shares)


def _unsharded_stages(plan: VerifyPlan) -> tuple[tuple[LayerSpec, ...], ...]:
    """The engine's pipeline stages with every layer as the model has it (no tp applied)."""
    single = replace(plan.opts, tensor_parallel_size=1)
    return get_engine(plan.engine).stage_layers(plan.layout, single)


def _rank_note(plan: VerifyPlan, pp_rank: int, pp: int) -> str:
    if pp > 1 and plan.stage_weights:
        return (
            f"weights of stage {pp_rank}: {'the embedding, ' if pp_rank == 0 else ''}"
            f"{'the LM head, ' if pp_rank == pp - 1 else ''}its layers' share"
        )
    return plan.note


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class RankResult:
    """What one rank measured: its share, its process, and its own verify report (one plan)."""

    rank: int
    tp_rank: int
    pp_rank: int
    layers: tuple[int, ...]
    holds: tuple[str, ...]
    pid: int
    host: str
    report: VerifyReport
    #: The sum of every rank's measured cache bytes, as the all_reduce over the backend returned it here.
    all_reduced_bytes: int
    seconds: float

    @property
    def plan(self) -> PlanResult:
        return self.report.plans[0]

    @property
    def layer_range(self) -> str:
        return _ranges(self.layers)

    @property
    def cache_bytes(self) -> int:
        """Measured cache tensor bytes (the shapes' bytes when the plan ran out of memory)."""
        p = self.plan
        return p.measured.cache_tensor_bytes if p.measured is not None else p.planned_bytes


@dataclass(frozen=True)
class RanksReport:
    """A multi-rank verify: every rank's result, each rank's checks, and the deployment's."""

    name: str
    model: str
    engine: str
    ctx: int
    batch: int
    tp: int
    pp: int
    device: str
    backend: str
    #: "forkserver" / "spawn" (kvplan started the ranks) or "torchrun".
    launcher: str
    ranks: tuple[RankResult, ...]
    #: Every rank's checks (named "rank N: ..."), then the deployment's.
    checks: tuple[Check, ...]
    predicted_deployment_bytes: int
    wall_seconds: float
    #: The rank of this process (0 prints the report).
    rank: int = 0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def refuted(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def out_of_memory(self) -> tuple[RankResult, ...]:
        return tuple(r for r in self.ranks if not r.plan.fits)


# ----------------------------------------------------------------------------------------------------------
# Inside a rank


@dataclass(frozen=True)
class RankJob:
    """Everything a rank needs (pickled to it): the shares, the device kind, each rank's cap, the options."""

    shares: tuple[RankShare, ...]
    #: "cpu" or "cuda": rank r uses cuda:LOCAL_RANK.
    device: str
    caps: tuple[int | None, ...]
    cap_note: str
    gpu: str | None
    timing: bool
    probe: bool
    repeats: int
    time_budget_s: float


def verify_rank(env: RankEnv, job: RankJob, progress: RankProgress | None) -> RankResult:
    """One rank: verify its share on its device, then all_reduce its cache bytes with the other ranks'."""
    started = time.perf_counter()
    torch = import_torch()
    share = job.shares[env.rank]
    device = "cpu"
    if job.device == "cuda":
        torch.cuda.set_device(env.local_rank)
        device = f"cuda:{env.local_rank}"
    info = open_device(device, max_bytes=job.caps[env.rank], gpu=job.gpu)
    if job.cap_note:
        info = replace(info, cap_note=job.cap_note)
    report = run_verify(
        [share.plan],
        device,
        timing=job.timing,
        probe=job.probe,
        repeats=job.repeats,
        time_budget_s=job.time_budget_s,
        on_progress=progress,
        device_info=info,
    )
    plan = report.plans[0]
    mine = plan.measured.cache_tensor_bytes if plan.measured is not None else plan.planned_bytes
    total = torch.tensor([mine], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(total)
    return RankResult(
        rank=env.rank,
        tp_rank=share.tp_rank,
        pp_rank=share.pp_rank,
        layers=share.layers,
        holds=share.holds,
        pid=os.getpid(),
        host=socket.gethostname(),
        report=report,
        all_reduced_bytes=int(total.item()),
        seconds=time.perf_counter() - started,
    )


# ----------------------------------------------------------------------------------------------------------
# The deployment


def _rank_checks(result: RankResult) -> list[Check]:
    prefix = f"rank {result.rank}: "
    return [replace(c, name=prefix + c.name.removeprefix(prefix)) for c in result.report.checks]


def _deployment_checks(plan: VerifyPlan, ranks: Sequence[RankResult], backend: str) -> list[Check]:
    est = predict(plan)
    measured = sum(r.cache_bytes for r in ranks)
    predicted = est.deployment_bytes
    name = plan.name
    how = " + ".join(f"{r.cache_bytes:,}" for r in ranks)
    ok = predicted == measured
    checks = [
        Check(
            f"{name}: deployment cache bytes",
            name,
            "deployment_bytes",
            predicted,
            measured,
            ok,
            f"predicted {exact_and_human(predicted)} over {len(ranks)} ranks; the ranks hold {how} = "
            f"{exact_and_human(measured)}" + ("" if ok else f" ({measured - predicted:+,} B)"),
        )
    ]
    seen = {r.rank: r.all_reduced_bytes for r in ranks}
    agree = all(v == measured for v in seen.values())
    checks.append(
        Check(
            f"{name}: all_reduce over {backend}",
            name,
            "collective",
            measured,
            min(seen.values()),
            agree,
            f"every rank's all_reduce(SUM) of the ranks' cache bytes returned {exact_and_human(measured)}"
            if agree
            else "the ranks' all_reduce results differ: " + ", ".join(f"rank {r}: {v:,}" for r, v in seen.items()),
        )
    )
    probed = [(r.rank, r.plan.probe) for r in ranks if r.plan.probe is not None]
    if probed and len(probed) == len(ranks):
        by_predicted = min(probed, key=lambda rp: rp[1].predicted_max_batch)
        by_measured = min(probed, key=lambda rp: rp[1].measured_max_batch)
        predicted_max, measured_max = by_predicted[1].predicted_max_batch, by_measured[1].measured_max_batch
        checks.append(
            Check(
                f"{name}: deployment max batch",
                name,
                "max_batch",
                by_predicted[1].predicted_bytes,
                by_measured[1].measured_bytes,
                predicted_max == measured_max,
                f"the deployment serves what its smallest rank holds: predicted max batch {predicted_max} "
                f"(rank {by_predicted[0]}), probed {measured_max} (rank {by_measured[0]})",
            )
        )
    return checks


def _report(
    plan: VerifyPlan, gathered: Sequence[RankResult], device: str, backend: str, launcher: str, wall: float, rank: int
) -> RanksReport:
    ranks = tuple(sorted(gathered, key=lambda r: r.rank))
    checks = [c for r in ranks for c in _rank_checks(r)] + _deployment_checks(plan, ranks, backend)
    return RanksReport(
        name=plan.name,
        model=plan.model,
        engine=plan.engine,
        ctx=plan.ctx,
        batch=plan.batch,
        tp=plan.opts.tensor_parallel_size,
        pp=plan.opts.pipeline_parallel_size,
        device=device,
        backend=backend,
        launcher=launcher,
        ranks=ranks,
        checks=tuple(checks),
        predicted_deployment_bytes=predict(plan).deployment_bytes,
        wall_seconds=wall,
        rank=rank,
    )


def _caps(max_bytes: int | Sequence[int | None] | None, world: int) -> tuple[int | None, ...]:
    if max_bytes is None or isinstance(max_bytes, int):
        return (max_bytes,) * world
    caps = tuple(max_bytes)
    if len(caps) != world:
        raise OptionError(Param.MAX_BYTES, f"{len(caps)} per-rank caps for {world} ranks; give one, or one per rank")
    for cap in caps:
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise OptionError(Param.MAX_BYTES, f"must be a positive size, e.g. 3GiB; got {cap!r}")
    return caps


def _cpu_caps(caps: tuple[int | None, ...]) -> tuple[tuple[int | None, ...], str]:
    """On a CPU the ranks share the machine's RAM: each may use at most its share of half of what is available
    (a rank without a cap, or with a larger one, gets that share), since running out kills instead of raising."""
    free = _meminfo("MemAvailable") or _sysconf("SC_AVPHYS_PAGES") or 0
    share = free // 2 // len(caps)
    if all(c is not None and c <= share for c in caps):
        return caps, ""
    note = (
        f"on a CPU the {len(caps)} ranks share half of the available RAM: at most {exact_and_human(share)} each "
        "(running out of RAM kills a process instead of raising)"
    )
    return tuple(share if c is None or c > share else c for c in caps), note


def _device_kind(device: str, world: int, launched: bool) -> str:
    kind, index = parse_device(device)
    if kind == "mps":
        raise OptionError(Param.DEVICE, "MPS is one device in one process: verify ranks on cpu (gloo) or cuda (NCCL)")
    if kind == "cuda" and index is not None:
        raise OptionError(Param.DEVICE, f"rank r uses cuda:r (cuda:LOCAL_RANK under torchrun): give cuda, not {device}")
    if kind == "cuda" and not launched:
        torch = import_torch()
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < world:
            raise DeviceUnavailableError(
                device,
                f"{world} ranks need {world} CUDA devices, one each; torch sees {count}. "
                f"{spell(Param.DEVICE)} cpu runs the same ranks over gloo",
            )
    return kind


def run_ranks(
    plan: VerifyPlan,
    device: str = "cpu",
    *,
    max_bytes: int | Sequence[int | None] | None = None,
    gpu: str | None = None,
    timing: bool = True,
    probe: bool = True,
    repeats: int = 5,
    time_budget_s: float = 2.0,
    on_progress: ProgressCallback | None = None,
    start_method: str | None = None,
) -> RanksReport:
    """Verify ``plan`` (its tp and pp in ``plan.opts``) on tp x pp ranks: under torchrun on the ranks it
    started (WORLD_SIZE must be tp x pp; every rank returns the whole report, rank 0 prints it), else on ranks
    started here. ``max_bytes``: one cap for every rank, or one per rank (None: no cap for that rank).

    A plan that runs out of memory on a rank is a result; a rank that fails raises RankFailedError after every
    rank is torn down (Ctrl-C tears them down too, then re-raises KeyboardInterrupt).
    """
    started = time.perf_counter()
    shares = rank_shares(plan)
    world = len(shares)
    predict(plan)  # usage errors (a dtype the engine lacks ...) before any rank starts
    env = torchrun_env("nccl" if parse_device(device)[0] == "cuda" else "gloo")
    if env is not None and env.world_size != world:
        raise OptionError(
            Param.TENSOR_PARALLEL_SIZE,
            f"tp {plan.opts.tensor_parallel_size} x pp {plan.opts.pipeline_parallel_size} = {world} ranks, "
            f"but torchrun started {env.world_size} (WORLD_SIZE)",
        )
    kind = _device_kind(device, world, env is not None)
    caps, note = (_caps(max_bytes, world), "")
    if kind == "cpu":
        caps, note = _cpu_caps(caps)
    backend = "nccl" if kind == "cuda" else "gloo"
    job = RankJob(shares, kind, caps, note, gpu, timing, probe, repeats, time_budget_s)
    if env is not None:
        gathered = run_in_group(verify_rank, job, replace(env, backend=backend), on_progress if env.rank == 0 else None)
        return _report(plan, gathered, kind, backend, "torchrun", time.perf_counter() - started, env.rank)

    def forward(rank: int, task: str, done: int, total: int) -> None:
        if on_progress is not None:  # a rank's tasks are named after its plan, "rank N"
            on_progress(task, done, total)

    gathered = launch(
        verify_rank,
        job,
        world,
        backend=backend,
        start_method=start_method,
        preload=["kvplan.verify.ranks"],
        on_progress=forward,
    )
    method = start_method or default_start_method()
    return _report(plan, gathered, kind, backend, method, time.perf_counter() - started, 0)
