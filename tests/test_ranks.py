"""Multi-rank verify on the CPU over gloo: every rank's bytes from independent arithmetic (heads split, heads
copied when tp > H_kv, the MLA latent whole, pipeline stages), a rank that runs out of memory, and the process
handling: a failing or killed rank tears the others down, Ctrl-C and a killed launcher leave no process behind.

The ranks are real processes. They start from one forkserver per test session (it imports torch once), so
each multi-rank run here costs well under a second after the first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvplan.cli import app
from kvplan.cli.verify import rank_caps
from kvplan.engines import EngineOptions
from kvplan.errors import ExitCode, OptionError, RankFailedError
from kvplan.verify import plan_for_model
from kvplan.verify.launch import launch, torchrun_env
from kvplan.verify.ranks import kv_heads_held, rank_shares, run_ranks

from . import rank_targets
from .conftest import FIXTURES

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")

GQA = str(FIXTURES / "gqa")  # llama, 4 layers, 16 query heads, 4 KV heads, hidden 1024 (head_dim 64), bf16
MQA = str(FIXTURES / "mqa")  # falcon, 3 layers, 8 query heads, 1 KV head (head_dim 64), fp16
MLA = str(FIXTURES / "mla_deepseek")  # 4 MLA layers, kv_lora_rank 64 + rope 16, bf16
MiB = 2**20


def gqa_bytes(layers: int, heads: int, ctx: int, batch: int) -> int:
    """K and V, `heads` heads of 64 values, 2 B each, per layer, per token, per sequence."""
    return 2 * layers * heads * 64 * 2 * ctx * batch


def gqa_plan(tp: int, pp: int = 1, *, ctx: int = 64, batch: int = 2, probe: bool = False, model: str = GQA):
    opts = EngineOptions(tensor_parallel_size=tp, pipeline_parallel_size=pp)
    return plan_for_model(model, ctx=ctx, batch=batch, opts=opts, weights=False, probe=probe)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone(pids: list[int], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def pids_in(folder: Path, n: int, within_s: float = 60.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        files = sorted(folder.glob("rank*.pid"))
        if len(files) == n and all(f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.05)
    raise AssertionError(f"{n} ranks did not start")


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


# ---- what each rank holds (pure) ---------------------------------------------------------------------------


def test_kv_heads_held_split_and_copied() -> None:
    assert [kv_heads_held(8, 4, r) for r in range(4)] == [f"KV heads {2 * r}-{2 * r + 1} of 8" for r in range(4)]
    assert kv_heads_held(4, 4, 3) == "KV head 3 of 4"
    # tp 8 over 2 heads: ranks 0-3 hold head 0, ranks 4-7 head 1 (vLLM: shard_id = tp_rank // (tp / H_kv))
    assert [kv_heads_held(2, 8, r) for r in (0, 3, 4, 7)] == [
        "KV head 0 of 2 (copy 1 of 4)",
        "KV head 0 of 2 (copy 4 of 4)",
        "KV head 1 of 2 (copy 1 of 4)",
        "KV head 1 of 2 (copy 4 of 4)",
    ]


def test_rank_shares_place_tp_innermost_and_split_layers() -> None:
    shares = rank_shares(gqa_plan(2, 2))
    assert [(s.rank, s.tp_rank, s.pp_rank, s.layers) for s in shares] == [
        (0, 0, 0, (0, 1)),
        (1, 1, 0, (0, 1)),
        (2, 0, 1, (2, 3)),
        (3, 1, 1, (2, 3)),
    ]
    assert [s.plan.stage for s in shares] == [0, 0, 1, 1]
    assert shares[1].holds == ("KV heads 2-3 of 4",)
    mla = rank_shares(gqa_plan(2, model=MLA))
    assert mla[1].holds == ("the whole MLA latent (on every one of the 2 ranks)",)


def test_rank_shares_refuse_a_tp_the_heads_cannot_share() -> None:
    with pytest.raises(OptionError, match="query heads"):
        rank_shares(gqa_plan(3))


def test_rank_caps_one_each_or_overrides() -> None:
    assert rank_caps("64MiB", 4) == 64 * MiB
    assert rank_caps("1MiB,2MiB,3MiB,4MiB", 4) == [MiB, 2 * MiB, 3 * MiB, 4 * MiB]
    assert rank_caps("1MiB,2=300KiB", 4) == [MiB, MiB, 300 * 1024, MiB]
    assert rank_caps("3=1MiB", 4) == [None, None, None, MiB]
    with pytest.raises(OptionError, match=r"^max_bytes:"):
        rank_caps("1MiB,2MiB", 4)
    with pytest.raises(OptionError, match="rank 0-3"):
        rank_caps("4=1MiB", 4)


def test_torchrun_environment_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", "29500")
    env = torchrun_env("gloo")
    assert env is not None and (env.rank, env.world_size, env.local_rank, env.launcher) == (1, 2, 1, "torchrun")
    with pytest.raises(OptionError, match="4 ranks, but torchrun started 2"):
        run_ranks(gqa_plan(4), "cpu", timing=False, probe=False)


def test_under_torchrun_the_given_ranks_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as rank 0 of a world of 1 that "torchrun" made (the environment it sets): no process is
    started, the group is joined by env://, and left again."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    report = run_ranks(gqa_plan(1), "cpu", max_bytes=MiB, timing=False, probe=False)
    assert (report.launcher, report.rank, [r.pid for r in report.ranks]) == ("torchrun", 0, [os.getpid()])
    assert report.ranks[0].cache_bytes == gqa_bytes(4, 4, 64, 2) and report.ok
    assert not torch.distributed.is_initialized()


# ---- ranks on gloo -----------------------------------------------------------------------------------------


def test_tp2_splits_the_kv_heads_cli_json() -> None:
    """Through the CLI: --json has one object per rank with its rank and checks."""
    result = CliRunner().invoke(
        app,
        ["verify", "--device", "cpu", "--model", GQA, "--ctx", "64", "--batch", "2", "-tp", "2", "--max-bytes",
         "64MiB", "--no-timing", "--no-probe", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == "kvplan.verify-ranks/1" and data["ok"]
    expected = gqa_bytes(4, 2, 64, 2)  # 2 of the 4 heads on each rank: 131,072 B
    assert [r["rank"] for r in data["ranks"]] == [0, 1]
    for r in data["ranks"]:
        assert r["plan"]["measured_bytes"] == r["plan"]["predicted_bytes"] == expected
        assert r["holds"] == [f"KV heads {2 * r['rank']}-{2 * r['rank'] + 1} of 4"]
        assert {c["kind"] for c in r["checks"]} == {"cache_bytes", "fits"}
        assert all(c["ok"] for c in r["checks"])
    assert data["measured_deployment_bytes"] == data["predicted_deployment_bytes"] == 2 * expected
    assert len({r["pid"] for r in data["ranks"]}) == 2 and os.getpid() not in {r["pid"] for r in data["ranks"]}


def test_tp4_one_head_per_rank_and_the_probe() -> None:
    report = run_ranks(gqa_plan(4, probe=True), "cpu", max_bytes=MiB, timing=False)
    one = gqa_bytes(4, 1, 64, 2)  # 131,072 B
    assert [r.cache_bytes for r in report.ranks] == [one] * 4
    assert [r.holds for r in report.ranks] == [(f"KV head {r} of 4",) for r in range(4)]
    per_sequence = gqa_bytes(4, 1, 64, 1)
    for r in report.ranks:
        assert r.plan.probe is not None
        assert r.plan.probe.measured_max_batch == r.plan.probe.predicted_max_batch == MiB // per_sequence == 16
    assert report.ok and report.launcher in ("forkserver", "spawn") and report.backend == "gloo"


def test_tp_above_the_kv_heads_copies_them() -> None:
    """Falcon MQA (3 layers, 1 KV head of 64, fp16) on tp 2: each rank keeps the one whole head, so the
    deployment holds it twice."""
    report = run_ranks(gqa_plan(2, model=MQA), "cpu", max_bytes=MiB, timing=False, probe=False)
    one = 2 * 3 * 1 * 64 * 2 * 64 * 2  # K and V x layers x head x head_dim x 2 B x ctx x batch = 49,152 B
    assert [r.cache_bytes for r in report.ranks] == [one, one]
    assert report.predicted_deployment_bytes == 2 * one
    assert [r.holds for r in report.ranks] == [("KV head 0 of 1 (copy 1 of 2)",), ("KV head 0 of 1 (copy 2 of 2)",)]
    assert report.ok


def test_mla_latent_is_whole_on_every_rank() -> None:
    report = run_ranks(gqa_plan(2, model=MLA), "cpu", max_bytes=MiB, timing=False, probe=False)
    latent = 4 * (64 + 16) * 2 * 64 * 2  # layers x (kv_lora_rank + rope) x 2 B x ctx x batch = 81,920 B
    assert [r.cache_bytes for r in report.ranks] == [latent, latent]
    assert report.ok


def test_pp2_each_stage_checks_its_layers_and_its_weights(tmp_path: Path) -> None:
    """A tiny llama (vocab 256, hidden 64, 4 layers, 4 query / 2 KV heads, intermediate 128, bf16, untied)
    on 2 stages: layers 0-1 and 2-3; the embedding on stage 0, the LM head on stage 1."""
    config = {
        "model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "hidden_size": 64, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 512,
        "torch_dtype": "bfloat16", "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    opts = EngineOptions(pipeline_parallel_size=2)
    plan = plan_for_model(str(tmp_path), ctx=32, batch=2, opts=opts, probe=False)
    report = run_ranks(plan, "cpu", max_bytes=4 * MiB, timing=False, probe=False)
    # head_dim 16: K and V of 2 heads x 16 x 2 B, 2 layers per stage, 32 tokens x 2 sequences
    assert [r.cache_bytes for r in report.ranks] == [2 * 2 * 2 * 16 * 2 * 32 * 2] * 2
    assert [r.layers for r in report.ranks] == [(0, 1), (2, 3)]
    embedding = head = 256 * 64 * 2
    layer = (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64) * 2  # q, o; k, v; gate, up, down; 2 norms
    body = 4 * layer + 64 * 2  # the layers and the final norm, shared by layer count
    assert [r.plan.weights_bytes for r in report.ranks] == [embedding + body // 2, body // 2 + head]
    for r in report.ranks:
        assert r.plan.measured is not None and r.plan.measured.weights_bytes == r.plan.weights_bytes
    assert report.ok


@linux_only
def test_one_rank_out_of_memory_is_named_and_every_rank_exits() -> None:
    plan = gqa_plan(2)
    per_rank = gqa_bytes(4, 2, 64, 2)
    report = run_ranks(plan, "cpu", max_bytes=[MiB, per_rank // 2], timing=False, probe=False)
    assert [r.rank for r in report.out_of_memory] == [1]
    oom = report.ranks[1].plan.out_of_memory
    assert oom is not None and oom.source == "max_bytes" and oom.allocated_bytes == per_rank // 2
    assert report.ranks[0].plan.fits
    assert report.ok  # predicted not to fit under its cap, and it did not: the prediction held
    assert gone([r.pid for r in report.ranks])


# ---- process handling -------------------------------------------------------------------------------------


@linux_only
def test_launch_gathers_every_rank(tmp_path: Path) -> None:
    seen: list[tuple[int, str]] = []
    results = launch(rank_targets.rank_sum, str(tmp_path), 3, on_progress=lambda r, t, d, n: seen.append((r, t)))
    assert [r["rank"] for r in results] == [0, 1, 2] and {r["sum"] for r in results} == {6}
    assert sorted(seen) == [(0, "rank 0"), (1, "rank 1"), (2, "rank 2")]
    assert gone([r["pid"] for r in results])


@linux_only
def test_a_failing_rank_is_named_and_tears_the_others_down(tmp_path: Path) -> None:
    with pytest.raises(RankFailedError, match="rank 1 failed: RuntimeError: rank 1 broke on purpose") as err:
        launch(rank_targets.raise_on_rank_1, str(tmp_path), 3)
    assert err.value.rank == 1 and err.value.exit_code == ExitCode.RANK_FAILED == 3
    assert gone(pids_in(tmp_path, 3))


@linux_only
def test_a_killed_rank_is_named(tmp_path: Path) -> None:
    with pytest.raises(RankFailedError, match="rank 1 failed: killed by SIGKILL"):
        launch(rank_targets.killed_on_rank_1, str(tmp_path), 3)
    assert gone(pids_in(tmp_path, 3))


@linux_only
def test_ctrl_c_tears_every_rank_down(tmp_path: Path) -> None:
    def interrupt() -> None:
        pids_in(tmp_path, 2)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        launch(rank_targets.hold_memory, str(tmp_path), 2)
    assert time.monotonic() - started < 60
    assert gone(pids_in(tmp_path, 2), within_s=1.0)  # torn down before launch returned


@linux_only
def test_a_killed_launcher_leaves_no_rank_behind(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from tests import rank_targets
        from kvplan.verify.launch import launch

        if __name__ == "__main__":
            launch(rank_targets.hold_memory, {str(tmp_path)!r}, 2)
        """
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, env=env, stdin=subprocess.DEVNULL)
    try:
        pids = pids_in(tmp_path, 2)
        proc.kill()
        proc.wait(10)
        assert gone(pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
