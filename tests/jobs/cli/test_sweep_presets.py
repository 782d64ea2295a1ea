"""The paper's recipes (jobs/conf/sweep/simclrv2_*.yaml): every point composes, validates and dry-runs, with the
task counts of Table 1 and each child's dependency on its own parent task."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from jobs.cli import sweep as sweep_mod
from jobs.cli.sweep import build_manifest
from jobs.sweep.expand import compose_sweep

# stage -> tasks: Table 1's 13 architectures; fine-tuning at 1%, 10% and 100%; two distillations of the biggest
COUNTS = {
    "simclrv2_imagenet": {"pretrain": 13, "supervised": 13, "finetune": 39, "linear_eval": 13, "distill": 4},
    "simclrv2_cifar10": {"pretrain": 1, "linear_eval": 1},
}
TASK_LINE = re.compile(r"^#   \[(\d+)\] (\S+)(?: afterok:\$([A-Z_]+)_ARRAY_(\d+))?$")


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_a_preset_dry_runs_every_point_with_its_dependencies(name: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "sw"
    assert sweep_mod.main([name, f"sweep_dir={target}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not target.exists()
    manifest, _ = build_manifest(compose_sweep(name, [f"sweep_dir={target}"]))
    by_stage: dict[str, list[str]] = {}
    for t in manifest.tasks:
        by_stage.setdefault(t.stage, []).append(t.key)
    assert {s: len(keys) for s, keys in by_stage.items()} == COUNTS[name]
    parent_of = {t.key: t.parent for t in manifest.tasks}
    printed = [m for m in map(TASK_LINE.match, out.splitlines()) if m]
    assert len(printed) == len(manifest.tasks)
    for m in printed:
        key, parent_stage, parent_index = m[2], m[3], m[4]
        stage = key.split("/", 1)[0]
        assert by_stage[stage][int(m[1])] == key
        if parent_of[key] is None:
            assert parent_stage is None
        else:
            assert parent_stage is not None and parent_index is not None
            assert by_stage[parent_stage.lower()][int(parent_index)] == parent_of[key]
    assert out.count("#SBATCH --array=") == len(COUNTS[name]) and "afterany:" in out  # + the report


def _configs(name: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {t.key: t.config for t in build_manifest(compose_sweep(name))[0].tasks}


def test_imagenet_preset_is_the_papers_recipe() -> None:
    cfgs = _configs("simclrv2_imagenet")
    archs = {(c["model"]["depth"], c["model"]["width"], c["model"]["sk_ratio"])
             for k, c in cfgs.items() if k.startswith("pretrain/")}
    assert archs == {(d, w, sk) for d in (50, 101, 152) for w in (1.0, 2.0) for sk in (0.0, 0.0625)} | {(152, 3.0, 0.0625)}
    for key, c in cfgs.items():
        stage, o, t, f = c["stage"], c["optim"], c["train"], c["finetune"]
        assert c["model"]["cifar_stem"] is False and c["data"]["image_size"] == 224
        assert c["model"]["num_proj_layers"] == 3
        if stage == "pretrain":
            assert (t["epochs"], t["batch_size"], o["name"], o["lr_scaling"]) == (800, 4096, "lars", "sqrt")
            assert math.isclose(o["base_lr"] * math.sqrt(t["batch_size"]), 6.4)
            assert (o["weight_decay"], o["warmup_epochs"], c["pretrain"]["temperature"]) == (1e-4, 40, 0.1)
            assert (c["data"]["strength"], c["data"]["blur"]) == (1.0, True)
            # sec. 3: "The memory buffer is set to 64K, and exponential moving average (EMA) decay is set to 0.999"
            assert (c["pretrain"]["memory_size"], c["pretrain"]["memory_momentum"]) == (65536, 0.999)
        if stage == "finetune":
            big = c["model"]["width"] > 1 or c["model"]["sk_ratio"] > 0
            peak = o["base_lr"] * math.sqrt(t["batch_size"])
            assert math.isclose(peak, 0.064 if big else 0.16)
            assert (t["batch_size"], o["weight_decay"], o["warmup_epochs"]) == (1024, 0.0, 0)
            assert t["epochs"] == (60 if f["label_fraction"] == 0.01 else 30)
            assert f["ft_proj_selector"] == (0 if f["label_fraction"] == 1.0 else 1)
            assert (f["zero_init_logits"], f["fine_tune_after_block"]) == (True, -1)
        if stage == "linear_eval":
            assert (f["fine_tune_after_block"], f["zero_init_logits"], f["augment"], f["label_fraction"]) == (4, True, True, 1.0)
            assert (o["name"], o["base_lr"], o["weight_decay"], t["epochs"], t["batch_size"]) == ("sgd", 0.1, 1e-6, 90, 4096)
        if stage == "distill":
            self_distill = c["model"]["width"] == 3.0
            assert c["distill"]["temperature"] == (0.1 if self_distill else 1.0)
            assert (t["epochs"], t["batch_size"], c["distill"]["label_weight"]) == (400, 4096, 0.0)


def test_cifar10_preset_is_the_readme_recipe() -> None:
    cfgs = _configs("simclrv2_cifar10")
    pre = next(c for k, c in cfgs.items() if k.startswith("pretrain/"))
    lin = next(c for k, c in cfgs.items() if k.startswith("linear_eval/"))
    assert (pre["model"]["depth"], pre["model"]["width"], pre["model"]["cifar_stem"]) == (18, 1.0, True)
    assert (pre["train"]["epochs"], pre["train"]["batch_size"], pre["optim"]["base_lr"]) == (1000, 512, 1.0)
    assert (pre["optim"]["weight_decay"], pre["pretrain"]["temperature"]) == (1e-4, 0.5)
    assert (pre["data"]["strength"], pre["data"]["blur"], pre["data"]["image_size"]) == (0.5, False, 32)
    assert (lin["optim"]["name"], lin["optim"]["base_lr"], lin["optim"]["weight_decay"]) == ("sgd", 0.1, 0.0)
    assert (lin["train"]["epochs"], lin["train"]["batch_size"], lin["finetune"]["fine_tune_after_block"]) == (100, 512, 4)
