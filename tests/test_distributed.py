"""Distributed training: backend selection, the torchrun launcher, real two-rank gloo runs on CPU.

Everything here runs real processes with the real ``gloo`` backend on 127.0.0.1, except the
CUDA/XPU tests marked "FAKED DEVICE": this machine has no GPU, so those (and only those) replace
``torch.cuda`` / ``torch.xpu`` availability, ``set_device`` and ``init_process_group`` with
recording stand-ins, to check which device is pinned and which backend is requested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from rho_core import distributed
from rho_core.errors import ConfigError, RhoError
from rho_core.launch import launch_torchrun, torchrun_command

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ENV = {"PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}


@pytest.fixture(autouse=True)
def _no_leftover_context():
    distributed.shutdown()
    yield
    distributed.shutdown()


# ------------------------------------------------------------------------------------------
# backend selection and the torchrun environment (in-process)
# ------------------------------------------------------------------------------------------
def test_default_backend_per_device_type():
    assert distributed.default_backend("cpu") == "gloo"
    assert distributed.default_backend(torch.device("cuda", 3)) == "nccl"
    assert distributed.default_backend("xpu") == "xccl"
    with pytest.raises(ConfigError, match="MPS"):
        distributed.default_backend("mps")


def test_backend_override_is_checked_against_the_device():
    assert distributed.select_backend("cuda", "gloo") == "gloo"  # gloo carries CUDA tensors
    assert distributed.select_backend("cpu", "auto") == "gloo"
    assert distributed.select_backend("xpu", None) == "xccl"
    with pytest.raises(ConfigError, match="cannot communicate cpu"):
        distributed.select_backend("cpu", "nccl")
    with pytest.raises(ConfigError, match="cannot communicate xpu"):
        distributed.select_backend("xpu", "nccl")
    with pytest.raises(ConfigError, match="unknown distributed backend"):
        distributed.select_backend("cpu", "infiniband")


def test_torchrun_env_parsing():
    assert distributed.read_torchrun_env({}) is None
    env = distributed.read_torchrun_env(
        {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
         "GROUP_RANK": "1", "MASTER_ADDR": "n0", "MASTER_PORT": "29400",
         "TORCHELASTIC_RESTART_COUNT": "2"}
    )
    assert (env.rank, env.world_size, env.local_rank, env.node_rank, env.restart_count) == (
        5, 8, 1, 1, 2)
    with pytest.raises(ConfigError, match="RANK=8"):
        distributed.read_torchrun_env({"RANK": "8", "WORLD_SIZE": "8"})
    with pytest.raises(ConfigError, match="WORLD_SIZE is not set"):
        distributed.read_torchrun_env({"RANK": "0"})
    with pytest.raises(ConfigError, match="not an integer"):
        distributed.read_torchrun_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_single_process_context_and_helpers(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    ctx = distributed.init_distributed("cpu")
    assert not ctx.is_distributed and ctx.is_main and ctx.world_size == 1
    assert not dist.is_initialized()
    assert distributed.all_reduce_scalar(2.5) == 2.5
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    seeds = {distributed.rank_seed(11, r) for r in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**63 for s in seeds)
    assert distributed.rank_seed(11, 3) == distributed.rank_seed(11, 3)
    assert distributed.rank_seed(11, 0) != distributed.rank_seed(12, 0)


class _FakeAccelerator:
    """FAKED DEVICE: stands in for ``torch.cuda`` / ``torch.xpu`` on this GPU-less machine."""

    def __init__(self, count: int):
        self.count, self.pinned = count, None

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def set_device(self, index: int) -> None:
        self.pinned = index


@pytest.mark.parametrize(("dev_type", "backend"), [("cuda", "nccl"), ("xpu", "xccl")])
def test_faked_accelerator_pins_local_rank_and_requests_backend(monkeypatch, dev_type, backend):
    """FAKED DEVICE (the only one in the suite): no CUDA/XPU hardware exists here, so availability,
    ``set_device`` and ``init_process_group`` are recorded instead of executed."""
    fake = _FakeAccelerator(count=4)
    monkeypatch.setattr(torch, dev_type, fake, raising=False)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if not k.startswith("CCL_")})
    calls: list[dict] = []
    monkeypatch.setattr(dist, "is_backend_available", lambda name: name == backend)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(calls))
    environ = {"RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    ctx = distributed.init_distributed(dev_type, environ=environ)
    assert fake.pinned == 2
    assert ctx.device == torch.device(dev_type, 2) and ctx.backend == backend
    assert ctx.ddp_device_ids() == [2]
    assert len(calls) == 1
    kw = calls[0]
    assert kw["backend"] == backend and kw["rank"] == 6 and kw["world_size"] == 8
    assert kw["init_method"] == "env://" and kw["device_id"] == torch.device(dev_type, 2)
    if backend == "xccl":  # oneCCL learns the node-local layout without an MPI launcher
        assert os.environ["CCL_PROCESS_LAUNCHER"] == "none"
        assert (os.environ["CCL_LOCAL_RANK"], os.environ["CCL_LOCAL_SIZE"]) == ("2", "4")
    else:
        assert "CCL_LOCAL_RANK" not in os.environ
    distributed._CONTEXT = None  # the faked group cannot be destroyed

    # more local ranks than devices on the node: a clear error naming the limit
    with pytest.raises(ConfigError, match="at most 4 processes per node"):
        distributed.pin_local_device(dev_type, 4)
    # the backend missing from this torch build (e.g. a CPU wheel on an XPU node)
    monkeypatch.setattr(dist, "is_backend_available", lambda name: False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    with pytest.raises(ConfigError, match=f"backend '{backend}' is not built"):
        distributed.init_distributed(dev_type, environ=environ)


# ------------------------------------------------------------------------------------------
# the launcher
# ------------------------------------------------------------------------------------------
def test_torchrun_command_single_and_multi_node():
    cmd = torchrun_command(["train.py", "--x"], nproc=2, max_restarts=1, python="py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc-per-node=2" in cmd and "--max-restarts=1" in cmd
    assert cmd[-2:] == ["train.py", "--x"]
    cmd = torchrun_command(["-m", "rho_core.train_worker"], nproc=4, nnodes=3, node_rank=2,
                           rdzv_endpoint="node0:29400", rdzv_id="job17")
    assert "--standalone" not in cmd
    for flag in ("--nnodes=3", "--node-rank=2", "--rdzv-backend=c10d",
                 "--rdzv-endpoint=node0:29400", "--rdzv-id=job17"):
        assert flag in cmd
    with pytest.raises(ConfigError, match="rdzv-endpoint"):
        torchrun_command(["t.py"], nproc=1, nnodes=2, node_rank=0)
    with pytest.raises(ConfigError, match="rdzv-id"):
        torchrun_command(["t.py"], nproc=1, nnodes=2, rdzv_endpoint="h:1")
    with pytest.raises(ConfigError, match="node-rank"):
        torchrun_command(["t.py"], nproc=1, nnodes=2, node_rank=2, rdzv_endpoint="h:1",
                         rdzv_id="j")
    with pytest.raises(ConfigError, match="nproc"):
        torchrun_command(["t.py"], nproc=0)


def test_failed_worker_raises_with_log_tail():
    lines: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(RhoError, match="exited with status") as info:
        launch_torchrun([str(TESTS / "proc_worker.py"), "fail", "1"], nproc=2,
                        log_callback=lines.append, env=ENV)
    assert "rank 1: simulated failure" in str(info.value)
    assert "local rank 1 (exit status 3" in str(info.value)
    assert any("simulated failure" in line for line in lines)
    assert time.monotonic() - t0 < 60


def test_log_tail_keeps_what_the_worker_printed_before_torchrun_report():
    """torchrun's own traceback after a failure (≈ 60 lines) must not push the dying worker's
    last words out of the error message."""
    from rho_core.launch import LogTail

    tail = LogTail(10)
    for i in range(30):
        tail.add(f"[rank1] step {i}")
    tail.add("E1204 agent api.py:1002] failed (exitcode: -9) local_rank: 1 (pid: 100) of binary")
    tail.add("[rank1] restarted")
    tail.add("terminate called after throwing an instance of 'gloo::IoException'")
    tail.add("E1204 agent api.py:1002] failed (exitcode: -6) local_rank: 1 (pid: 200) of binary")
    for i in range(60):
        tail.add(f"  File torch/distributed/run.py, line {i}")
    text = tail.report()
    assert text.startswith("failed workers, in order: local rank 1 (signal SIGKILL, pid 100); "
                           "local rank 1 (signal SIGABRT, pid 200)")
    assert "gloo::IoException" in text and "[rank1] restarted" in text
    assert "run.py" not in text  # torchrun's traceback left out
    assert len(text.splitlines()) == 1 + 10
    plain = LogTail(3)
    for i in range(5):
        plain.add(f"line {i}")
    assert plain.report() == "last 3 lines of its log:\nline 2\nline 3\nline 4"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_exception_while_running_stops_the_whole_tree():
    """An exception in the caller (as a Prefect cancel or Ctrl-C would raise) must not leave
    workers behind: torchrun puts each worker in its own session, so killing only the agent's
    process group would orphan them."""
    pids: list[int] = []
    stores: list[str] = []

    def callback(line: str) -> None:
        m = re.search(r"ready rank=\d pid=(\d+) agent_store=(\w+)", line)
        if m:
            pids.append(int(m.group(1)))
            stores.append(m.group(2))
        if len(pids) == 2:
            raise KeyboardInterrupt("simulated cancel")

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        launch_torchrun([str(TESTS / "proc_worker.py"), "hang"], nproc=2, log_callback=callback,
                        env=ENV, grace_s=5.0)
    assert len(pids) == 2 and all(_gone(p) for p in pids), pids
    assert time.monotonic() - t0 < 30
    # workers get a fresh rendezvous store per attempt (see launch.SHARED_STORE_ENV)
    assert stores == ["False", "False"]


def test_killed_caller_takes_torchrun_and_workers_down():
    """SIGKILL of the launching process (no handler can run: a Prefect flow-run process killed
    on cancellation) still stops torchrun and its workers, via the parent-death signal."""
    import signal
    import subprocess

    caller = subprocess.Popen(
        [sys.executable, str(TESTS / "proc_worker.py"), "launch"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env={**os.environ, **ENV}, start_new_session=True,
    )
    pids: list[int] = []
    try:
        for line in caller.stdout:
            m = re.search(r"ready rank=\d pid=(\d+)", line)
            if m:
                pids.append(int(m.group(1)))
            if len(pids) == 2:
                break
        assert len(pids) == 2
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(_gone(p) for p in pids):
            time.sleep(0.1)
        assert all(_gone(p) for p in pids), "workers outlived their killed caller"
    finally:
        for pid in pids:  # never leave sleepers behind, even when the assertion fails
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        caller.stdout.close()


# ------------------------------------------------------------------------------------------
# real two-rank DDP on gloo
# ------------------------------------------------------------------------------------------
def test_two_rank_ddp_equals_single_process_with_same_global_batch(tmp_path):
    sys.path.insert(0, str(TESTS))
    try:
        import ddp_tiny_worker as tiny
    finally:
        sys.path.remove(str(TESTS))
    steps, global_batch = 15, 8  # 96 samples / 8 = 12 steps per epoch: crosses an epoch
    lines: list[str] = []
    launch_torchrun([str(TESTS / "ddp_tiny_worker.py"), str(tmp_path), "--steps", str(steps),
                     "--global-batch", str(global_batch)], nproc=2, log_callback=lines.append,
                    env=ENV)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # collectives: rank 0's object reached rank 1; all ranks were seen; per-rank seeds differ
    assert r0["token"] == r1["token"] == {"token": 1234}
    assert r0["ranks"] == r1["ranks"] == [0, 1]
    assert r0["seed"] != r1["seed"]

    logged = {}
    for line in lines:
        m = re.search(r"\[tiny\] step=(\d+) loss=([0-9.]+)", line)
        if m:
            logged[int(m.group(1))] = float(m.group(2))
    assert sorted(logged) == list(range(1, steps + 1))

    single_losses: dict[int, float] = {}
    model = tiny.train_tiny(steps, global_batch, log=lambda s, v: single_losses.__setitem__(s, v))
    ref = model.state_dict()
    for name, value in ref.items():
        # the ranks hold bit-identical parameters (DDP broadcasts, then applies equal updates) ...
        assert torch.equal(r0["state"][name], r1["state"][name]), name
        # ... equal to one process with the same global batch up to float32 summation order
        torch.testing.assert_close(r0["state"][name], value, rtol=1e-5, atol=1e-6)
    # the all-reduced mean of the per-rank losses is the global-batch loss of the single run
    for s in range(1, steps + 1):
        assert logged[s] == pytest.approx(single_losses[s], rel=1e-5, abs=1e-7)
    # and the run moved the parameters at all (otherwise equality would prove nothing)
    init = tiny.make_model().state_dict()
    assert any((init[k] - ref[k]).abs().max() > 1e-3 for k in ref)


# ------------------------------------------------------------------------------------------
# the real training loop (rho_core.training.train) under torchrun: equality, corrupt, SIGKILL
# ------------------------------------------------------------------------------------------
def _tiny_store(path: Path) -> Path:
    """24 one-channel 1-D fields of 8 points, ρ = sin((1 + a)·c) on c ∈ [0, 3], a ~ U[0, 1]."""
    import numpy as np

    from rho_core.data.store import create_store

    rng = np.random.default_rng(0)
    a = rng.uniform(0.0, 1.0, (24, 1))
    c = np.linspace(0.0, 3.0, 8)
    fields = np.sin(c[None, None, :] * (1.0 + a[:, :, None])).astype(np.float32)
    with create_store(path, kind="test_sines", spatial_dims=1, param_names=["a"],
                      field_shape=(1, 8)) as writer:
        writer.append(fields, a)
    return path


TINY_CONFIG = """\
model:   # ~20 k parameters: tens of steps per second on one CPU core
  base_channels: 8
  channel_mult: [1, 2]
  attention_levels: []
  mid_attention: false
  cond_dim: 16
  fourier_features: 4
  timesteps: 100
train:
  steps: 8
  batch_size: 2
  lr: 1.0e-3
  warmup_steps: 2
  checkpoint_every: 2
  keep_checkpoints: 3
  log_every: 1
  device: cpu
  ema_half_life_samples: 50
"""


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    """A real Zarr store, its YAML config, and the configs ``rho train`` resolves from them."""
    from rho_cli.train import build_configs

    root = tmp_path_factory.mktemp("tiny")
    store = _tiny_store(root / "sines.zarr")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    model_cfg, train_cfg = build_configs(str(store), str(config))
    return store, config, model_cfg, train_cfg


def _init_weights(model_cfg) -> dict:
    from rho_core.model import DiffusionModel

    torch.manual_seed(0)  # train() seeds the initial weights with TrainConfig.seed = 0
    return DiffusionModel(model_cfg).state_dict()


def _outputs(model_cfg, weights: dict) -> torch.Tensor:
    """The network's raw output for fixed inputs: 6 noisy fields at spread-out timesteps."""
    from rho_core.model import DiffusionModel

    model = DiffusionModel(model_cfg)
    model.load_state_dict(weights)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 1, 8, generator=g)
    t = torch.tensor([0, 10, 30, 50, 80, 99])
    params = torch.rand(6, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return model.eval()(x, t, params)


def _step_log(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_two_rank_train_equals_single_process_and_corrupt_newest_falls_back(
    tiny_job, tmp_path, capsys
):
    import dataclasses
    import json

    from rho_cli.main import main
    from rho_core.checkpoint import load_checkpoint
    from rho_core.data.dataset import StoreDataset
    from rho_core.train_worker import train_distributed
    from rho_core.training import train

    store, config, model_cfg, train_cfg = tiny_job
    # one process, global batch 4
    single = train(model_cfg, dataclasses.replace(train_cfg, batch_size=4, keep_checkpoints=10),
                   StoreDataset(store), tmp_path / "single")
    ref = load_checkpoint(tmp_path / "single" / "checkpoints" / "ckpt-00000008.pt")
    # two ranks × batch 2 = global batch 4: `rho train --nproc 2` (torchrun, gloo)
    run = tmp_path / "ddp"
    assert main(["train", "--data", str(store), "--out", str(run), "--config", str(config),
                 "--nproc", "2", "--backend", "gloo"]) == 0
    err = capsys.readouterr().err
    assert "global batch 4 = 2 per rank × 2 ranks × 1 accumulation" in err
    assert "trained to step 8" in err and "on 2 process(es), global batch 4" in err
    res = json.loads((run / "result.json").read_text())
    assert res["world_size"] == 2 and res["global_batch"] == 4 and res["step"] == 8
    assert res["backend"] == "gloo"
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["global_batch"] == 4 and resolved["world_size"] == 2
    assert resolved["model"] == model_cfg.to_dict()  # the CLI resolved the same model
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.pt"))
    assert ckpts == ["ckpt-00000004.pt", "ckpt-00000006.pt", "ckpt-00000008.pt"]  # keep last 3
    got = load_checkpoint(run / "checkpoints" / "ckpt-00000008.pt")
    # Compare the trained *functions*: biases right before a GroupNorm have an exactly zero
    # gradient, which Adam's g/√v turns into updates driven by float32 round-off, so those
    # weights differ between any two summation orders (even batch 4 vs 2 × accumulation 2 in
    # one process) without changing the network's output.
    ref_out = _outputs(model_cfg, ref["model"])
    assert (ref_out - _outputs(model_cfg, _init_weights(model_cfg))).abs().max() > 1e-2  # moved
    torch.testing.assert_close(_outputs(model_cfg, got["model"]), ref_out, rtol=1e-4, atol=1e-5)
    losses = [r["loss"] for r in _step_log(run)]
    assert losses == pytest.approx(single.losses, rel=1e-5, abs=1e-7)

    # corrupt the newest checkpoint: the next start resumes from step 6, warns, and replays
    # steps 7-8 exactly as before
    newest = run / "checkpoints" / "ckpt-00000008.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    lines: list[str] = []
    res = train_distributed(model_cfg, train_cfg, store, run, nproc=2, log_callback=lines.append)
    assert res["start_step"] == 6 and res["step"] == 8
    assert any("skipping unreadable checkpoint" in ln and "ckpt-00000008.pt" in ln
               for ln in lines), "\n".join(lines[-20:])
    again = load_checkpoint(newest)
    torch.testing.assert_close(_outputs(model_cfg, again["model"]), ref_out, rtol=1e-4, atol=1e-5)
    steps = [r["step"] for r in _step_log(run)]
    assert steps == list(range(1, 9)) + [7, 8]


def test_sigkill_one_worker_restarts_and_resumes_from_last_checkpoint(tiny_job, tmp_path):
    import dataclasses
    import signal

    from rho_core.train_worker import WORKER_TAG, train_distributed

    store, _, model_cfg, train_cfg = tiny_job
    every, total, kill_at = 4, 60, 9
    run = tmp_path / "run"
    workers: dict[tuple[int, int], int] = {}  # (restart, rank) -> pid
    killed: list[int] = []

    def callback(line: str) -> None:
        m = re.search(rf"{re.escape(WORKER_TAG)} rank=(\d+)/\d+ .*restart=(\d+) pid=(\d+)", line)
        if m:
            workers[(int(m.group(2)), int(m.group(1)))] = int(m.group(3))
        m = re.search(r"step (\d+)/\d+", line)
        if m and not killed and int(m.group(1)) >= kill_at and (0, 1) in workers:
            os.kill(workers[(0, 1)], signal.SIGKILL)
            killed.append(int(m.group(1)))

    cfg = dataclasses.replace(train_cfg, steps=total, checkpoint_every=every)
    # (a worker that aborted at exit after its last step — gloo threads at interpreter teardown —
    # failed this in 1 of ~30 CI runs; the workers now leave through distributed.exit_worker)
    res = train_distributed(model_cfg, cfg, store, run,
                            nproc=2, max_restarts=1, log_callback=callback,
                            env={"RHO_DIST_TIMEOUT_S": "60"})  # a hung restart fails in 60 s
    assert killed, "the run finished before a worker could be killed"
    assert res["step"] == total and res["restart_count"] == 1
    assert (1, 0) in workers and (1, 1) in workers  # a second worker group was started

    records = _step_log(run)
    groups = [[r["step"] for r in records if r["restart"] == k]
              for k in range(res["restart_count"] + 1)]
    first = groups[0]
    assert first == list(range(1, len(first) + 1)) and first[-1] >= killed[0]
    done = first[-1]
    for steps in groups[1:]:
        if not steps:  # a group that failed before its first step
            continue
        resumed = steps[0] - 1
        assert resumed % every == 0 and resumed <= done  # resumed at a checkpoint ...
        assert steps == list(range(resumed + 1, steps[-1] + 1))  # ... with no gap ...
        assert done - resumed <= every  # ... repeating at most one checkpoint interval
        done = steps[-1]
    assert done == total and res["start_step"] % every == 0
    # the repeated steps are replayed exactly (same weights, data order and noise)
    loss0 = {r["step"]: r["loss"] for r in records if r["restart"] == 0}
    replayed = [r for r in records if r["restart"] > 0 and r["step"] in loss0]
    for r in replayed:
        assert r["loss"] == pytest.approx(loss0[r["step"]], rel=1e-6)
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.pt"))
    assert ckpts[-1] == f"ckpt-{total:08d}.pt" and len(ckpts) == 3


def test_bad_distributed_requests_fail_before_launching(tiny_job, tmp_path, caplog):
    """User errors are one ConfigError from the parent, not a failure per torchrun attempt."""
    import dataclasses

    from rho_cli.main import main
    from rho_core.train_worker import train_distributed

    store, config, model_cfg, train_cfg = tiny_job
    with caplog.at_level("WARNING", logger="rho_core.train_worker"), pytest.raises(
        ConfigError, match="cannot communicate cpu tensors"
    ):
        train_distributed(model_cfg, train_cfg, store, tmp_path / "a", nproc=2, backend="nccl")
    assert "has no normalisation" in caplog.text  # warned once, in the parent, as `rho train` does
    with pytest.raises(ConfigError, match="not available"):  # no XPU on this machine
        train_distributed(model_cfg, dataclasses.replace(train_cfg, device="xpu"), store,
                          tmp_path / "b", nproc=2)
    (tmp_path / "c" / "checkpoints").mkdir(parents=True)
    (tmp_path / "c" / "checkpoints" / "ckpt-00000002.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train_distributed(model_cfg, train_cfg, store, tmp_path / "c", nproc=2, resume=False)
    # the CLI turns them into one-line errors with exit status 2
    assert main(["train", "--data", str(store), "--out", str(tmp_path / "d"), "--config",
                 str(config), "--nproc", "2", "--nnodes", "2"]) == 2
    assert not (tmp_path / "a" / "result.json").exists()


def test_exit_worker_flushes_output_and_keeps_the_exit_code():
    """exit_worker leaves through os._exit (no interpreter teardown, where gloo's threads can
    abort the process): block-buffered output and log records must still arrive."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
        "sys.stdout.write('result line, no newline')\n"
        "logging.getLogger('w').info('log record')\n"
        "from rho_core.distributed import exit_worker\n"
        "exit_worker(3)\n"
        "print('not reached')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=TESTS.parent)  # fmt: skip
    assert proc.returncode == 3
    assert proc.stdout == "result line, no newline"
    assert "log record" in proc.stderr and "not reached" not in proc.stdout
