"""Issue 6 on the real local SLURM cluster, with the REAL stages (a tiny ResNet on real Fashion-MNIST images):

* a tiny sweep (2 config points x 2 label fractions) runs end to end to a report, one array per stage with
  per-task dependencies; a task cancelled by hand -> ``resume`` reruns only it and its dependants;
  ``status`` matches SLURM's view; a rerun of the sweep submits nothing;
* a running pretrain task preempted by a job in the high-priority partition -> requeued -> resumed ->
  final weights identical to a run with no preemption;
* bad cluster values are rejected before any sbatch;
* the same sweep under the local-executor profile.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.sweep.manifest import read_jobs, read_manifest
from jobs.cli.resume import run_resume
from jobs.sweep.status import Row, collect, finished
from jobs.cli.sweep import run_sweep

pytestmark = pytest.mark.slow

# The stage tests' tiny model, one short epoch per stage (tests/jobs/stages/test_stages.py).
TINY = [
    "model.width=0.125",
    "data.image_size=16",
    "train.batch_size=16",
    "train.log_every=1",
    "train.checkpoint_every=4",
    "train.channels_last=false",
    "train.threads=1",
    "pretrain.knn_train_samples=64",
    # One epoch comes from tiny.yaml's sweep overrides. Not given here: command-line overrides apply last,
    # over a grid block's own (the cancel test's victim block sets train.epochs=20).
    "train.max_steps=0",  # tiny.yaml caps steps for the fake-stage tests; these run whole epochs
]
FRACTIONS = "stages.finetune.grid=[{axes:{finetune.label_fraction:[0.1,0.5]}}]"


def _ov(sweep: Path, root: Path, *extra: str) -> list[str]:
    return [f"sweep_dir={sweep}", f"data.root={root}", *TINY, FRACTIONS, *extra]


def _settle(sweep: Path, timeout_s: float, until: Any = None) -> tuple[list[Row], Row | None]:
    """Poll ``status`` until everything ended (or ``until(rows)``); on time-out cancel the sweep and fail."""
    t0 = time.monotonic()
    while True:
        rows, report = collect(sweep)
        if (until(rows) if until else finished(rows, report)):
            return rows, report
        if time.monotonic() - t0 > timeout_s:
            from jobs.cli.cancel import cancel

            cancel(sweep)
            pytest.fail(f"sweep {sweep} did not settle in {timeout_s:.0f} s: "
                        f"{[(r.stage, r.point, r.state, r.step) for r in rows]}, report {report}")
        time.sleep(0.5)


def _sacct_states(array_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(array_ids), "-o", "JobID,State"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    from jobs.sweep.queue import expand_job_id

    states: dict[str, str] = {}
    for line in out.splitlines():
        jid, state = line.split("|")
        for one in expand_job_id(jid):
            states[one] = state.split()[0]
    return states


@pytest.mark.cluster
def test_tiny_sweep_end_to_end_cancel_resume_report(tiny_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # The victim pretrains for 20 epochs (300 steps) so that it is still running when it is cancelled: with one
    # epoch it could finish between `status` saying RUNNING and scancel arriving (seen on a quiet machine).
    ov = _ov(sweep, tiny_root, "stages.pretrain.grid=[{axes:{model.num_proj_layers:[2]}},"
                               "{axes:{model.num_proj_layers:[3]},overrides:['train.epochs=20']}]")
    sub = run_sweep("tiny", ov, printer=lambda *_: None)
    assert sorted(sub.arrays) == ["finetune", "pretrain"] and sub.sbatch_calls == 3  # 2 arrays + the report
    manifest = read_manifest(sweep)
    victim = next(t for t in manifest.tasks if t.key.startswith("pretrain/proj3"))
    # per-task dependencies: each fine-tune waits on its own pretrain task, not on the whole array
    deps = dict(line.split("|", 1) for line in subprocess.run(
        ["squeue", "-h", "-r", "-j", sub.arrays["finetune"], "-o", "%i|%E"], capture_output=True, text=True,
        timeout=30).stdout.splitlines())
    for t in manifest.tasks:
        if t.stage == "finetune" and sub.job_ids[t.key] in deps:
            assert f"afterok:{sub.job_ids[t.parent]}" in deps[sub.job_ids[t.key]]  # type: ignore[index]

    # cancel one pretrain task by hand while it runs
    _settle(sweep, 240, until=lambda rows: any(r.point == "proj3" and r.state == "RUNNING" for r in rows))
    subprocess.run(["scancel", sub.job_ids[victim.key]], check=True, timeout=30)
    rows, report = _settle(sweep, 420)
    state = {r.point: r.state for r in rows}
    assert state == {"proj2": "DONE", "proj3": "CANCELLED", "proj2-lf0.1": "DONE", "proj2-lf0.5": "DONE",
                     "proj3-lf0.1": "CANCELLED", "proj3-lf0.5": "CANCELLED"}, state
    # the report ran although tasks were cancelled (afterany)
    assert report is not None and report.state == "COMPLETED" and (sweep / "report" / "report.html").is_file()
    # status matches SLURM's own view of every job, once the accounting has caught up with the queue (slurmdbd
    # records a job's end a moment after squeue shows it; status reads squeue first)
    for _ in range(60):
        slurm = _sacct_states(list(sub.arrays.values()))
        if all(slurm.get(r.job_id) == r.slurm_state for r in rows):
            break
        time.sleep(0.5)
        rows, _ = collect(sweep)
    for r in rows:
        assert r.slurm_state == slurm.get(r.job_id), (r.point, r.slurm_state, slurm.get(r.job_id))

    # resume reruns exactly the cancelled task and its dependants; finished runs are untouched
    done_status = {r.run_dir: (Path(r.run_dir) / "status.json").read_text() for r in rows if r.state == "DONE"}
    again = run_resume(sweep, printer=lambda *_: None)
    assert sorted(again.job_ids) == sorted(t.key for t in manifest.tasks if "proj3" in t.key)
    rows, report = _settle(sweep, 420)
    assert all(r.state == "DONE" for r in rows), [(r.point, r.state) for r in rows]
    assert report is not None and report.state == "COMPLETED"
    assert done_status == {d: (Path(d) / "status.json").read_text() for d in done_status}
    # and neither resume nor the sweep itself submits anything more
    n = len(read_jobs(sweep))
    assert run_resume(sweep, printer=lambda *_: None).job_ids == {}
    assert run_sweep("tiny", ov, printer=lambda *_: None).job_ids == {}
    assert len(read_jobs(sweep)) == n


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from simclr.train import checkpoint as ckpt

    loaded = ckpt.load_latest(run_dir / "checkpoints")
    assert loaded is not None, f"no checkpoint in {run_dir}"
    state, _ = loaded
    return state["model"]


@pytest.mark.cluster
def test_preempted_pretrain_requeues_and_resumes_to_identical_weights(tiny_root: Path, tmp_path: Path) -> None:
    from jobs.stages.runner import run_stage

    sweep = tmp_path / "sweep"
    ov = _ov(sweep, tiny_root, "train.epochs=3", "stages.finetune.enabled=false", "report.enabled=false",
             "stages.pretrain.grid=[{axes:{model.num_proj_layers:[2]}}]")
    sub = run_sweep("tiny", ov, printer=lambda *_: None)
    (task,) = read_manifest(sweep).tasks
    job_id = sub.job_ids[task.key]
    rows, _ = _settle(sweep, 240, until=lambda rows: rows[0].state == "RUNNING" and (rows[0].step or 0) >= 2)
    node = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True,
                          timeout=30).stdout.strip()
    # an exclusive job on that node in the high partition preempts it (REQUEUE, after the USR2 signal)
    intruder = subprocess.run(["sbatch", "--parsable", "-p", "high", "-w", node, "--exclusive", "-t", "2",
                               "-o", "/dev/null", "--wrap", "sleep 2"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    try:
        rows, _ = _settle(sweep, 420)
    finally:
        subprocess.run(["scancel", intruder], capture_output=True, timeout=30)
    (row,) = rows
    assert row.state == "DONE", row
    progress = json.loads((Path(task.run_dir) / "progress.json").read_text())
    assert progress["restarts"] >= 1  # it really was stopped and resumed
    requeues = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                              text=True, timeout=30).stdout.split()
    assert any(s in ("REQUEUED", "PREEMPTED") for s in requeues), requeues
    # the same config, never preempted, in this process
    reference = dict(task.config, run_dir=str(tmp_path / "reference"))
    assert run_stage(reference)["state"] == "done"
    got, want = _final_weights(Path(task.run_dir)), _final_weights(tmp_path / "reference")
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.cluster
def test_bad_cluster_values_are_rejected_before_any_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    log = tmp_path / "sbatch.log"
    shim = tmp_path / "bin" / "sbatch"
    shim.parent.mkdir()
    shim.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexec {shutil.which('sbatch')} \"$@\"\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    sweep = tmp_path / "sweep"
    for bad, key in [("cluster.partition=debug;reboot", "partition"), ("cluster.time_min=-1", "time_min"),
                     ("cluster.gpus_per_node=1", "tasks_per_node"), ("cluster.account='a b'", "account")]:
        extra = [bad, "cluster.tasks_per_node=2"] if key == "tasks_per_node" else [bad]
        with pytest.raises(ValueError, match=key):
            run_sweep("tiny", [f"sweep_dir={sweep}", "data.root=/d", *extra], printer=lambda *_: None)
    assert not log.exists() and not sweep.exists()


def test_same_sweep_under_the_local_executor_profile(tiny_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sub = run_sweep("tiny", _ov(sweep, tiny_root, "cluster=local_executor", "cluster.array_parallelism=2"),
                    printer=lambda *_: None)
    assert sub.sbatch_calls == 1 and len(sub.job_ids) == 6
    rows, report = _settle(sweep, 600, until=lambda rows: finished(*collect(sweep))
                           and collect(sweep)[1].state not in ("RUNNING", "PENDING"))  # type: ignore[union-attr]
    assert all(r.state == "DONE" for r in rows), [(r.point, r.state, r.reason) for r in rows]
    assert report is not None and report.state == "COMPLETED" and (sweep / "report" / "report.html").is_file()
    finals = [json.loads((Path(r.run_dir) / "status.json").read_text())["final"] for r in rows]
    assert all("test/top1" in f or "test/knn_top1" in f for f in finals)


@pytest.mark.cluster
def test_a_broken_data_root_is_refused_before_anything_is_queued(tiny_root: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated shard used to be queued and fail on every node; now simclr-sweep refuses it at the login node
    (exit 2, the task's own message), with nothing in the queue and nothing in jobs.jsonl."""
    import shutil

    from jobs.cli.sweep import main as sweep_main

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    shard = root / "train" / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[:20000])
    sweep = tmp_path / "sweep"
    name = f"broken-{os.getpid()}"
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
    assert sweep_main(["tiny", *_ov(sweep, root), f"name={name}"]) == 2
    err = capsys.readouterr().err
    assert "truncated shard: 20000 of" in err and "shard-000002.tar" in err
    assert not (sweep / "jobs.jsonl").exists()
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
    assert set(after) <= set(before)


@pytest.mark.cluster
def test_a_data_set_too_small_for_a_batch_is_refused_before_anything_is_queued(
        tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18: a small data set's fine-tune tasks (batch 32 over the 20 labels of the 10% list) were queued and
    failed on the nodes with 'exceeds the 20 samples'; now simclr-sweep refuses them at the login node (exit 2,
    stage, point and key named), with nothing in the queue and nothing in jobs.jsonl."""
    from jobs.cli.sweep import main as sweep_main

    sweep = tmp_path / "sweep"
    name = f"small-{os.getpid()}"
    assert sweep_main(["tiny", *_ov(sweep, tiny_root), f"name={name}", "train.batch_size=32"]) == 2
    err = capsys.readouterr().err
    assert "finetune, point 'proj2-lf0.1'" in err and "train.batch_size=32 exceeds the 20 labelled samples" in err
    assert "finetune.label_fraction" in err and "lf0.5" not in err  # the 50% list (120 labels) fits
    assert not (sweep / "jobs.jsonl").exists() or not read_jobs(sweep)
    # By job name, not by comparing queues: another user's jobs may come and go on the cluster meanwhile.
    names = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout.split()
    assert not [n for n in names if n.startswith(f"simclr-{name}-")]
    assert not (sweep / "slurm").exists()  # no submitit folder: no sbatch was prepared


# A 2-point cut of each paper preset (jobs/conf/sweep/simclrv2_*.yaml), the tiny model on the local cluster: the
# recipes' own keys (LARS with sqrt scaling, blur, the zero-initialised classifier, the frozen backbone) run
# through the real stages end to end. Grids are cut where their axes or parent selectors name the paper's sizes,
# and the per-stage resources of the GPU cluster are dropped for the local profile's.
# (a resources dict merges onto the preset's, so each GPU-cluster key is set back to the local profile's value)
LOCAL_RESOURCES = {"nodes": 1, "time_min": 60, "max_num_timeout": 3}
PRESET_CUTS = {
    "simclrv2_imagenet": [
        "stages.pretrain.grid=[{axes:{model.depth:[18]}}]",
        "stages.finetune.grid=[{axes:{finetune.label_fraction:[0.1],finetune.ft_proj_selector:[1]}}]",
        "stages.supervised.grid=[{}]", "stages.distill.grid=[{}]",
        "stages.supervised.enabled=false", "stages.linear_eval.enabled=false", "stages.distill.enabled=false",
        "pretrain.memory_size=64",  # the preset's 65,536 is more than the tiny split (refused before the queue)
        *(f"stages.{stage}.resources.{key}={value}" for stage in ("pretrain", "finetune")
          for key, value in LOCAL_RESOURCES.items()),
    ],
    # (its resources set only time limits and requeues, which the local cluster takes as they are)
    "simclrv2_cifar10": ["cluster.gpus_per_node=0", "finetune.label_fraction=0.5"],
}


@pytest.mark.cluster
@pytest.mark.parametrize("preset", sorted(PRESET_CUTS))
def test_a_two_point_cut_of_each_paper_preset_runs_end_to_end(preset: str, tiny_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    ov = [f"sweep_dir={sweep}", "cluster=local", "report.enabled=false", f"data.root={tiny_root}",
          "data.eval_split=test", "data.num_workers=0", "model.width=0.125", "train.epochs=1", *TINY[1:],
          *PRESET_CUTS[preset]]
    sub = run_sweep(preset, ov, printer=lambda *_: None)
    manifest = read_manifest(sweep)
    assert len(manifest.tasks) == 2 and len(sub.arrays) == 2
    rows, _ = _settle(sweep, 420)
    assert all(r.state == "DONE" for r in rows), [(r.stage, r.point, r.state) for r in rows]
    child = next(t for t in manifest.tasks if t.parent is not None)
    cfg = json.loads((Path(child.run_dir) / "config.json").read_text())
    assert cfg["finetune"]["zero_init_logits"] is True and cfg["model"]["cifar_stem"] is True
    status = json.loads((Path(child.run_dir) / "status.json").read_text())
    assert 0 <= status["final"]["test/top1"] <= 100
