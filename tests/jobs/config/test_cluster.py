"""Cluster profiles: the shipped YAMLs load, bad values are refused naming the key, parameters map to sbatch."""

from __future__ import annotations

import dataclasses
import re
import shutil

import pytest

from jobs.config.cluster import ClusterProfile, load_profile, make_executor, profile_from_dict, slurm_parameters, validate


@pytest.mark.parametrize("name", ["local", "local_executor", "example_gpu"])
def test_shipped_profiles_load_and_validate(name: str) -> None:
    p = load_profile(name)
    assert validate(p) is p


def test_local_profile_is_the_debug_partition_one_task_one_cpu() -> None:
    p = load_profile("local")
    assert (p.executor, p.partition, p.nodes, p.tasks_per_node, p.cpus_per_task) == ("slurm", "debug", 1, 1, 1)
    assert load_profile("local_executor").executor == "local"


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"partition": "debug;rm -rf ~"}, "partition"),
        ({"partition": "debug high"}, "partition"),
        ({"account": "$(whoami)"}, "account"),
        ({"qos": "a`b`"}, "qos"),
        ({"time_min": -5}, "time_min"),
        ({"time_min": 0}, "time_min"),
        ({"nodes": 0}, "nodes"),
        ({"tasks_per_node": 8, "gpus_per_node": 4}, "tasks_per_node"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"cpus_per_task": 0}, "cpus_per_task"),
        ({"mem_gb": 0}, "mem_gb"),
        ({"array_parallelism": 0}, "array_parallelism"),
        ({"max_num_timeout": -1}, "max_num_timeout"),
        ({"signal_delay_s": 120, "time_min": 2}, "signal_delay_s"),
        ({"executor": "pbs"}, "executor"),
        ({"setup": ["echo a\nrm -rf /"]}, "setup[0]"),
        ({"sbatch": {"constraint": "a100;reboot"}}, "sbatch.constraint"),
        ({"sbatch": {"mail-user": "me@x\n#SBATCH --x"}}, "sbatch.mail-user"),
        ({"sbatch": {"Bad Key": "1"}}, "sbatch.Bad Key"),
        ({"sbatch": {"dependency": "afterok:1"}}, "sbatch.dependency"),
        # profile keys own these: the extra flag silently replaced time_min / nodes / mem_gb in the script
        ({"sbatch": {"time": "2-00:00:00"}}, "sbatch.time"),
        ({"sbatch": {"nodes": "4"}}, "sbatch.nodes"),
        ({"sbatch": {"mem": "64G"}}, "sbatch.mem"),
        ({"sbatch": {"gpus-per-node": "2"}}, "sbatch.gpus-per-node"),
        ({"tasks_per_node": 1, "gpus_per_node": 4}, "tasks_per_node"),  # 3 of 4 GPUs idle
        ({"executor": "local", "nodes": 2}, "nodes"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(changes: dict, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"'{key}'")):
        validate(dataclasses.replace(ClusterProfile(), **changes))


def test_unknown_and_ill_typed_keys_are_named() -> None:
    with pytest.raises(ValueError, match="partiton"):
        profile_from_dict({"partiton": "debug"})
    with pytest.raises(ValueError, match="nodes"):
        profile_from_dict({"nodes": "two"})


def test_tasks_may_equal_gpus_and_cpu_only_jobs_have_no_gpu_limit() -> None:
    validate(dataclasses.replace(ClusterProfile(), tasks_per_node=4, gpus_per_node=4))
    validate(dataclasses.replace(ClusterProfile(), tasks_per_node=8, gpus_per_node=0))


def test_slurm_parameters_map_every_field() -> None:
    p = dataclasses.replace(
        load_profile("example_gpu"), mem_gb=1.5, sbatch={"constraint": "a100", "exclusive": "user"}
    )
    params = slurm_parameters(p, job_name="x", dependency="afterok:12")
    assert params["partition"] == "gpu" and params["account"] == "my_account" and params["qos"] == "normal"
    assert params["time"] == 240 and params["nodes"] == 2 and params["ntasks_per_node"] == 4
    assert params["gpus_per_node"] == 4 and params["cpus_per_task"] == 10 and params["mem"] == "1536MB"
    assert params["array_parallelism"] == 16 and params["signal_delay_s"] == 120
    assert params["setup"][0].startswith("export PYTHONPATH=") and "module load cuda/12.4" in params["setup"]
    extra = params["additional_parameters"]
    assert extra["constraint"] == "a100" and extra["dependency"] == "afterok:12"
    assert extra["kill-on-invalid-dep"] == "yes"


def test_sbatch_script_of_a_profile() -> None:
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string(command="python x", folder="/tmp/f/%j", map_count=3,
                               **slurm_parameters(load_profile("local")))
    assert "#SBATCH --partition=debug" in text and "#SBATCH --array=0-2%3" in text
    assert "#SBATCH --signal=USR2@60" in text and "--gpus" not in text and "--mem" not in text


def test_make_executor_local(tmp_path) -> None:
    ex = make_executor(load_profile("local_executor"), tmp_path / "%j")
    assert type(ex).__name__ == "LocalExecutor" and ex.max_num_timeout == 3


@pytest.mark.skipif(shutil.which("srun") is None, reason="submitit's SlurmExecutor needs srun on PATH")
def test_make_executor_slurm_puts_max_num_timeout_in_the_constructor(tmp_path) -> None:
    p = dataclasses.replace(load_profile("local"), max_num_timeout=7)
    ex = make_executor(p, tmp_path / "%j", job_name="n")
    from submitit.slurm.slurm import SlurmExecutor

    # a subclass: its task command is jobs.sweep.entry (the early-signal entry point)
    assert isinstance(ex, SlurmExecutor) and ex.max_num_timeout == 7
    assert ex.parameters["partition"] == "debug" and ex.parameters["job_name"] == "n"


def test_make_executor_validates_before_anything(tmp_path) -> None:
    bad = dataclasses.replace(ClusterProfile(), partition="x|y")
    with pytest.raises(ValueError, match="'partition'"):
        make_executor(bad, tmp_path)
    assert not any(tmp_path.iterdir())


def test_profile_file_that_is_not_a_mapping_is_refused_naming_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jobs.config.compose

    folder = tmp_path / "jobs" / "conf" / "cluster"
    folder.mkdir(parents=True)
    (folder / "listy.yaml").write_text("- partition: gpu\n- nodes: 2\n")
    monkeypatch.setattr(jobs.config.compose, "CONF_DIR", tmp_path / "jobs" / "conf")  # the one conf folder
    with pytest.raises(ValueError, match=r"cluster profile .*listy\.yaml: expected a mapping of config keys, got a list"):
        load_profile("listy")


def test_profile_file_that_does_not_parse_is_refused_naming_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML syntax error escaped as yaml's own ParserError (not a ValueError: a traceback, not an error line)."""
    import jobs.config.compose

    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "broken.yaml").write_text("partition: [gpu\n")
    monkeypatch.setattr(jobs.config.compose, "CONF_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"(?s)^cluster profile .*broken\.yaml: while parsing .*line 1"):
        load_profile("broken")


@pytest.mark.skipif(shutil.which("srun") is None, reason="submitit's SlurmExecutor needs srun on PATH")
def test_make_executor_validates_the_profile_once(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It validated the profile, then slurm_parameters (which it builds the parameters with) validated it again."""
    import jobs.config.cluster

    profile = load_profile("local")
    calls: list[ClusterProfile] = []
    monkeypatch.setattr(jobs.config.cluster, "validate", lambda p: calls.append(p) or p)
    make_executor(profile, tmp_path / "%j", job_name="n")
    assert calls == [profile]
    slurm_parameters(profile)  # called on its own, it is the check before the script
    assert len(calls) == 2
