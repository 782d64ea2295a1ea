"""``simclr-sweep``: validation before anything is queued, dry run, and the local-executor path end to end
with a small contract-following stage (the real stages on the real cluster: test_sweep_cluster.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from jobs.cli import sweep as sweep_mod
from jobs.sweep.manifest import read_jobs, read_manifest
from jobs.cli.resume import run_resume
from jobs.sweep.status import collect, finished

FAKE = "tests.jobs.fake_stage:run_stage"


def test_dry_run_prints_the_sbatch_scripts_and_writes_nothing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "sw"
    assert sweep_mod.main(["tiny", f"sweep_dir={target}", "data.root=/d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("#SBATCH --array=") == 2  # one array per stage: pretrain (2 tasks), finetune (4)
    assert "#SBATCH --array=0-1%2" in out and "#SBATCH --array=0-3%4" in out
    assert "#SBATCH --partition=debug" in out and "--dependency='afterok:$PRETRAIN_ARRAY'" in out
    assert out.count("afterok:$PRETRAIN_ARRAY_0") == 2 and out.count("afterok:$PRETRAIN_ARRAY_1") == 2
    assert "afterany:" in out  # the report job
    assert not target.exists()


@pytest.mark.parametrize("argv", [["--dry-run", "tiny"], ["tiny", "--dry-run", "data.root=/d"]])
def test_options_may_stand_among_the_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               argv: list[str]) -> None:
    """``simclr-sweep NAME --dry-run key=value`` failed with 'unrecognized arguments': --dry-run worked last only."""
    target = tmp_path / "sw"
    assert sweep_mod.main([*argv, f"sweep_dir={target}", "data.root=/d"]) == 0
    assert capsys.readouterr().out.count("#SBATCH --array=") == 2 and not target.exists()


@pytest.mark.parametrize("quote", ["'", ""])  # sweep_dir="/x/my sweep" in a shell reaches us unquoted
def test_a_sweep_folder_with_a_space_is_accepted_and_its_hint_is_shell_quoted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quote: str) -> None:
    from jobs.sweep.submit import Submission

    seen: dict[str, object] = {}

    def lock_plan_submit(manifest, **kw):  # type: ignore[no-untyped-def]
        seen["sweep_dir"] = manifest.sweep_dir
        return Submission(submission_id="s", job_ids={"pretrain/a": "5_0"}, arrays={"pretrain": "5"})

    monkeypatch.setattr(sweep_mod, "lock_plan_submit", lock_plan_submit)
    lines: list[str] = []
    target = tmp_path / "my sweep"
    sweep_mod.run_sweep("tiny", [f"sweep_dir={quote}{target}{quote}", "data.root=/d"], printer=lines.append)
    assert seen["sweep_dir"] == str(target)
    assert f"[sweep] watch it with: simclr-status '{target}' --watch" in lines


@pytest.mark.parametrize(
    "override, named",
    [("train.epochz=1", "train.epochz"), ("cluster.partition=a|b", "partition"),
     ("cluster.time_min=-3", "time_min"), ("cluster.tasks_per_node=4", "tasks_per_node"),
     ("cluster.cpus_per_task=4", None), ("model=resnet404", "resnet404")],
)
def test_a_bad_value_fails_the_whole_sweep_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           override: str, named: str | None) -> None:
    target = tmp_path / "sw"
    rc = sweep_mod.main(["tiny", f"sweep_dir={target}", "data.root=/d", override,
                         "cluster=local_executor", "--dry-run"])
    # tasks_per_node=4: the local executor would start 4 copies of its pipeline, each running every task
    if named is None:
        assert rc == 0
        return
    assert rc == 2 and named in capsys.readouterr().err
    assert not target.exists()


def _wait_finished(sweep: Path, timeout: float = 120) -> list:
    t0 = time.time()
    while True:
        rows, report = collect(sweep)
        if finished(rows, report) and (report is None or report.state != "RUNNING"):
            return rows
        if time.time() - t0 > timeout:
            raise AssertionError(f"sweep did not finish: {[(r.point, r.state) for r in rows]}")
        time.sleep(0.5)


@pytest.mark.slow
def test_local_executor_sweep_failure_rerun_and_resume(tmp_path: Path) -> None:
    """Runs in the background, a failed pretrain cancels only its dependants, a rerun submits nothing new,
    resume reruns exactly the failed task and its dependants."""
    sweep = tmp_path / "sw"
    # no report job here (matplotlib costs seconds per run); the real-stage tests check the report
    ov = [f"sweep_dir={sweep}", "data.root=/d", "cluster=local_executor", "cluster.array_parallelism=2",
          "report.enabled=false"]
    manifest_tasks = sweep_mod.build_manifest(sweep_mod.compose_sweep("tiny", ov))[0].tasks
    bad = next(t for t in manifest_tasks if t.key.startswith("pretrain/proj3"))
    Path(bad.run_dir).mkdir(parents=True)
    (Path(bad.run_dir) / "FAIL").write_text("")
    t0 = time.time()
    sub = sweep_mod.run_sweep("tiny", ov, runner=FAKE)
    assert time.time() - t0 < 30 and sub.sbatch_calls == 1  # returned once queued, not when done
    rows = _wait_finished(sweep)
    state = {r.point: r.state for r in rows}
    assert state == {"proj2": "DONE", "proj3": "FAILED", "proj2-lf0.01": "DONE", "proj2-lf0.1": "DONE",
                     "proj3-lf0.01": "CANCELLED", "proj3-lf0.1": "CANCELLED"}
    proj3 = sorted(t.key for t in manifest_tasks if "proj3" in t.key)
    done_before = {t.key: (Path(t.run_dir) / "status.json").read_text() for t in manifest_tasks
                   if "proj2" in t.key}
    # the same sweep again: finished runs are skipped; the not-done ones are submitted again (and fail again)
    again = sweep_mod.run_sweep("tiny", ov, runner=FAKE)
    assert sorted(again.job_ids) == proj3
    _wait_finished(sweep)
    # resume after fixing the cause: exactly the failed pretrain and its two fine-tunes
    (Path(bad.run_dir) / "FAIL").unlink()
    sub = run_resume(sweep, runner=FAKE)
    assert sorted(sub.job_ids) == proj3
    rows = _wait_finished(sweep)
    assert all(r.state == "DONE" for r in rows), [(r.point, r.state) for r in rows]
    # finished runs were never touched, and nothing is left to submit
    by_key = read_manifest(sweep).by_key()
    assert done_before == {k: (Path(by_key[k].run_dir) / "status.json").read_text() for k in done_before}
    n_jobs = len(read_jobs(sweep))
    assert run_resume(sweep, runner=FAKE).job_ids == {}
    assert sweep_mod.run_sweep("tiny", ov, runner=FAKE).job_ids == {}
    assert len(read_jobs(sweep)) == n_jobs


@pytest.mark.cluster
def test_a_hanging_scontrol_loses_no_queued_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The per-task dependency update times out (a busy controller): the arrays are already queued, so they
    must be in jobs.jsonl (else the next sweep or resume queues them twice) and the submission goes on."""
    from jobs.sweep import submit as submit_mod
    from jobs.cli.cancel import cancel

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "scontrol").write_text("#!/bin/sh\nsleep 30\n")
    (shim / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    monkeypatch.setattr(submit_mod, "NARROW_TIMEOUT_S", 1.0)
    sweep = tmp_path / "sw"
    # held for an hour: nothing runs, only what was queued is looked at
    ov = [f"sweep_dir={sweep}", "data.root=/d", "+cluster.sbatch.begin=now+1hour"]
    try:
        sub = sweep_mod.run_sweep("tiny", ov, runner=FAKE)
        assert sub.sbatch_calls == 3 and sub.report is not None  # pretrain, finetune and the report still queued
        assert any("scontrol dependency updates" in w and "failed" in w for w in sub.warnings)
        recorded = {r.key: r.job_id for r in read_jobs(sweep) if r.key}
        assert recorded == sub.job_ids and len(recorded) == 6
        assert "WARNING" in capsys.readouterr().out
        # a rerun finds everything queued and submits nothing
        assert sweep_mod.run_sweep("tiny", ov, runner=FAKE).job_ids == {}
    finally:
        if (sweep / "jobs.jsonl").is_file():
            cancel(sweep)


RESOURCES = ["+stages.pretrain.resources={time_min:5}", "report.resources.time_min=9"]


def test_each_jobs_profile_is_merged_once_where_the_manifest_is_built(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """build_manifest merged each stage's profile and threw it away; submit merged it again from the manifest."""
    import jobs.sweep.submit as submit_mod

    merged: list[dict] = []
    real = submit_mod.profile_from_dict
    monkeypatch.setattr(submit_mod, "profile_from_dict", lambda d: merged.append(d) or real(d))
    sweep = sweep_mod.compose_sweep("tiny", [f"sweep_dir={tmp_path / 'sw'}", "data.root=/d", *RESOURCES])
    manifest, profiles = sweep_mod.build_manifest(sweep)
    assert [d["time_min"] for d in merged] == [5, 9]  # pretrain's and the report's; finetune runs under the sweep's
    assert profiles["pretrain"].time_min == 5 and profiles["report"].time_min == 9
    assert profiles["finetune"] is profiles.base is sweep.cluster
    out: list[str] = []
    sweep_mod.submit(manifest, sweep_mod.plan(manifest, [], {}), dry_run=True, printer=out.append, profiles=profiles)
    assert len(merged) == 2 and "#SBATCH --time=5" in "\n".join(out) and "#SBATCH --time=9" in "\n".join(out)


def test_a_manifest_read_back_gives_the_same_profiles(tmp_path: Path) -> None:
    """resume has only the manifest on disk: the profiles it merges from what the manifest records (the same
    file as before) are the ones the sweep submitted with."""
    sweep = sweep_mod.compose_sweep("tiny", [f"sweep_dir={tmp_path / 'sw'}", "data.root=/d", *RESOURCES])
    manifest, built = sweep_mod.build_manifest(sweep)
    sweep_mod.write_manifest(tmp_path / "sw", manifest)
    again = sweep_mod.StageProfiles(read_manifest(tmp_path / "sw"))
    for stage in [*manifest.stages, "report"]:
        assert again[stage] == built[stage], stage
    assert again.base == built.base


@pytest.mark.parametrize("override, where", [
    ("+stages.pretrain.resources={nodes:0}", "'stages.pretrain.resources': cluster profile key 'nodes'"),
    ("+stages.finetune.resources={gpus:2}", "'stages.finetune.resources': cluster profile: unknown key 'gpus'"),
    ("report.resources.time_min=0", "'report.resources': cluster profile key 'time_min'"),
])
def test_a_bad_stage_resource_fails_the_whole_sweep_before_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, where: str) -> None:
    target = tmp_path / "sw"
    for dry in ([], ["--dry-run"]):
        assert sweep_mod.main(["tiny", f"sweep_dir={target}", "data.root=/d", override, *dry]) == 2
        assert f"sweep definition {where}" in capsys.readouterr().err
        assert not target.exists()


def test_each_profile_is_validated_where_it_is_made_and_at_the_sbatch_script(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's profile was merged and validated again by sweep_from_dict, every stage's again by submit, and
    make_executor / slurm_parameters validated twice more: 9 checks for 3 jobs here, now 6."""
    import jobs.config.cluster as cluster
    import jobs.sweep.expand as expand

    checked: list[int] = []
    real = cluster.validate
    monkeypatch.setattr(cluster, "validate", lambda p: checked.append(p.time_min) or real(p))
    monkeypatch.setattr(expand, "validate_profile", cluster.validate)
    sweep_mod.run_sweep("tiny", [f"sweep_dir={tmp_path / 'sw'}", "data.root=/d", *RESOURCES], dry_run=True,
                        printer=lambda *_: None)
    # composed (the sweep's: 60), merged at build (pretrain: 5, report: 9), each sbatch script (pretrain,
    # finetune under the sweep's profile, report)
    assert checked == [60, 5, 9, 5, 60, 9]


FITTING_FRACTIONS = "stages.finetune.grid=[{axes:{finetune.label_fraction:[0.1,0.5]}}]"  # tiny_root's key lists


@pytest.mark.parametrize("cluster, extra, named", [
    # the case: the 10% list holds 20 labels, a batch of 32 finetune tasks has no batch per epoch
    ("cluster=local", ["train.batch_size=32"], "finetune, point 'proj2-lf0.1' (run proj2-lf0.1-"),
    ("cluster=local_executor", ["train.batch_size=32"], "finetune, point 'proj3-lf0.1' (run proj3-lf0.1-"),
    # the pretrain array on 3 nodes: 16 does not split into 3 ranks (finetune's 1 rank is fine)
    ("cluster=local", ["train.batch_size=16", "+stages.pretrain.resources={nodes:3}"],
     "pretrain, point 'proj2' (run proj2-"),
])
def test_a_task_too_big_for_its_data_is_refused_by_sweep_and_resume(
        tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], cluster: str, extra: list[str],
        named: str) -> None:
    """No cluster needed: the check runs after the plan (no job recorded: no queue to read) and before any
    sbatch or local pipeline. resume reads the stages' ranks back from the manifest."""
    sweep = tmp_path / "sw"
    argv = ["tiny", f"sweep_dir={sweep}", f"data.root={tiny_root}", FITTING_FRACTIONS, cluster, *extra]
    assert sweep_mod.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("simclr-sweep: error: ") and named in err and "nothing was queued" in err
    if "nodes:3" in extra[-1]:  # the pretrain stage's ranks only: finetune's 1 rank takes 16 of 20 labels
        assert "not divisible by the 3 ranks" in err and "finetune" not in err
    assert not (sweep / "jobs.jsonl").exists() and not (sweep / "local").exists() and not (sweep / "slurm").exists()
    from jobs.cli.resume import main as resume_main

    assert resume_main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("simclr-resume: error: ") and named in err
    assert not (sweep / "jobs.jsonl").exists()
