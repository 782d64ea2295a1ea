"""Every stage end to end on a tiny ResNet and a few hundred real Fashion-MNIST images, on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from jobs.stages import builders
from jobs.config.stage import ConfigError, StageConfig, compose, to_dict
from jobs.stages.registry import BUILDERS
from jobs.stages.runner import run_stage
from simclr.train import checkpoint as ckpt
from simclr.train import preempt
from simclr.runfolder.write import RunFolder

pytestmark = pytest.mark.slow
torch.set_num_threads(1)  # the same numbers alone and inside the whole suite (tests/simclr/data sets 1 too)

TINY = [
    "model.width=0.125",
    "data.image_size=16",
    "train.batch_size=32",
    "train.log_every=1",
    "train.checkpoint_every=5",
    "train.channels_last=false",
    "pretrain.knn_train_samples=100",
]
PARENT_STAGE = {"finetune": "pretrain", "linear_eval": "pretrain", "distill": "finetune"}
TIMING = {"images_per_s"}


def cfg_for(stage: str, tmp: Path, root: Path, name: str, *extra: str, parent: Path | None = None) -> StageConfig:
    over = [f"run_dir={tmp / name}", f"data.root={root}", *TINY]
    if stage in ("finetune", "supervised", "distill"):
        over.append("finetune.label_fraction=0.5")
    if parent is not None:
        over.append(f"parent={parent}")
    return compose(stage, over + list(extra))


@pytest.fixture(scope="module")
def chain(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """pretrain -> finetune -> distill (plus linear_eval and supervised), each run once to the end."""
    tmp = tmp_path_factory.mktemp("chain")
    runs: dict[str, Path] = {}
    for stage, extra in [
        ("pretrain", ["train.epochs=2"]),
        ("finetune", ["train.epochs=12"]),  # a teacher confident enough for the distillation test
        ("linear_eval", ["train.epochs=2"]),
        ("supervised", ["train.epochs=4"]),
        ("distill", ["train.epochs=6"]),
    ]:
        parent = runs.get(PARENT_STAGE.get(stage, ""))
        cfg = cfg_for(stage, tmp, tiny_root, stage, *extra, parent=parent)
        status = run_stage(cfg)
        assert status["state"] == "done", status
        runs[stage] = Path(cfg.run_dir)
    return runs


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_every_stage_writes_the_run_folder_contract(chain: dict[str, Path]) -> None:
    for stage, run in chain.items():
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "done" and status["step"] == status["total_steps"] > 0
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["stage"] == stage and (run / "config.yaml").is_file()
        assert ckpt.list_checkpoints(run / "checkpoints")
        names = {m["name"] for m in metrics(run)}
        assert "loss" in names
        if stage == "pretrain":
            assert {"contrastive_acc", "probe_top1", "knn_top1"} <= names
            assert 0 <= status["final"]["test/knn_top1"] <= 100
        else:
            assert 0 <= status["final"]["test/top1"] <= status["final"]["test/top5"] <= 100


def test_finetune_starts_from_the_pretrained_weights(chain: dict[str, Path], tiny_root: Path, tmp_path: Path) -> None:
    cfg = cfg_for("finetune", tmp_path, tiny_root, "ft", parent=chain["pretrain"])
    from jobs.stages.finetune import build

    parts = build(cfg, torch.device("cpu"))
    pre = ckpt.load_latest(chain["pretrain"] / "checkpoints")[0]["model"]  # type: ignore[index]
    got = parts.model.state_dict()
    backbone = [k for k in pre if k.startswith("backbone.")]
    assert backbone
    for k in backbone:
        assert torch.equal(got[k], pre[k]), k
    # ft_proj_selector=1 keeps exactly the first head layer's weights
    neck = {k[len("neck."):]: v for k, v in got.items() if k.startswith("neck.")}
    layer0 = {k[len("head.layers."):]: v for k, v in pre.items() if k.startswith("head.layers.0.")}
    assert neck.keys() == layer0.keys() and layer0
    for k in neck:
        assert torch.equal(neck[k], layer0[k]), k


@pytest.mark.parametrize("stage", ["finetune", "linear_eval"])
def test_the_classifier_starts_at_zero_logits(chain: dict[str, Path], tiny_root: Path, tmp_path: Path, stage: str) -> None:
    """Official zero_init_logits_layer, the default of fine-tuning and linear eval: step 0 predicts uniformly."""
    from jobs.stages.finetune import build

    x = next(iter(builders.loader(cfg_for(stage, tmp_path, tiny_root, "x", parent=chain["pretrain"]),
                                  split="test", mode="eval", distributed=False).epoch_iter(0)))["image"]
    for zero in (True, False):
        cfg = cfg_for(stage, tmp_path, tiny_root, f"z{zero}", f"finetune.zero_init_logits={zero}",
                      parent=chain["pretrain"])
        model = build(cfg, torch.device("cpu")).model
        model.train()
        logits = model(x)
        assert torch.equal(logits, torch.zeros_like(logits)) == zero


def test_fine_tune_after_block_reaches_the_model_and_the_optimizer(chain: dict[str, Path], tiny_root: Path,
                                                                     tmp_path: Path) -> None:
    from jobs.stages.finetune import build

    cfg = cfg_for("finetune", tmp_path, tiny_root, "fz", "finetune.fine_tune_after_block=2", parent=chain["pretrain"])
    parts = build(cfg, torch.device("cpu"))
    frozen = {n for n, p in parts.model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("backbone.stem.", "backbone.group1.", "backbone.group2.")) for n in frozen)
    trained = {id(p) for g in parts.optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in parts.model.parameters() if p.requires_grad}


def test_crop_area_setting_reaches_the_augmentation(tiny_root: Path, tmp_path: Path) -> None:
    loaders = {a: builders.loader(cfg_for("pretrain", tmp_path, tiny_root, "c", f"data.min_crop_area={a}"), split="train",
                                  mode="two_view", distributed=False) for a in (0.08, 0.9)}
    assert {a: ld.transform.min_area for a, ld in loaders.items()} == {0.08: 0.08, 0.9: 0.9}  # type: ignore[union-attr]
    # and changes the views drawn from the same seeds
    b = {a: next(iter(ld.epoch_iter(0))) for a, ld in loaders.items()}
    assert not torch.equal(b[0.08]["view1"], b[0.9]["view1"])


def test_linear_eval_keeps_the_backbone_frozen(chain: dict[str, Path]) -> None:
    pre = ckpt.load_latest(chain["pretrain"] / "checkpoints")[0]["model"]  # type: ignore[index]
    lin = ckpt.load_latest(chain["linear_eval"] / "checkpoints")[0]["model"]  # type: ignore[index]
    for k, v in pre.items():
        if k.startswith("backbone."):
            assert torch.equal(lin[k], v), k  # weights AND BN running statistics


def test_distillation_loss_decreases_and_student_follows_teacher(chain: dict[str, Path], tiny_root: Path, tmp_path: Path) -> None:
    rows = [m for m in metrics(chain["distill"]) if m["split"] == "train" and m["name"] == "distill_loss"]
    first, last = rows[0]["value"], rows[-1]["value"]
    assert last < first
    from jobs.stages.distill import build, teacher_of

    # "Matches the teacher better": KL(teacher || student) on the images the student learned from, fresh
    # student vs the distilled one (measured 0.773 -> 0.447). Argmax agreement on the 100 test images was no
    # measure: a barely trained teacher predicts nearly one class, which a fresh student already matches.
    from simclr.losses.distill import distillation_loss

    cfg = cfg_for("distill", tmp_path, tiny_root, "d0", parent=chain["finetune"])
    parts = build(cfg, torch.device("cpu"))
    images = builders.loader(cfg, split="train", mode="eval", distributed=False, batch_size=60)
    t = teacher_of(cfg, images.num_classes, torch.device("cpu"))

    @torch.no_grad()
    def to_teacher(model: torch.nn.Module) -> float:
        # batch statistics, as in training: after 42 steps the BN running averages are still mostly init
        model.train()
        kl = []  # KL(teacher || student) = soft cross-entropy - teacher entropy (the part the student controls)
        for b in images.epoch_iter(0):
            tl = t(b["image"])
            entropy = float(distillation_loss(tl, tl, cfg.distill.temperature))
            kl.append(float(distillation_loss(model(b["image"]), tl, cfg.distill.temperature)) - entropy)
        return sum(kl) / len(kl)

    before = to_teacher(parts.model)
    parts.model.load_state_dict(ckpt.load_latest(chain["distill"] / "checkpoints")[0]["model"])  # type: ignore[index]
    after = to_teacher(parts.model)
    assert after < 0.8 * before, (before, after)


def test_distill_student_can_start_from_the_teachers_pretraining(chain: dict[str, Path], tiny_root: Path, tmp_path: Path) -> None:
    from jobs.stages.distill import build

    pre = ckpt.load_latest(chain["pretrain"] / "checkpoints")[0]["model"]  # type: ignore[index]
    cfg = cfg_for("distill", tmp_path, tiny_root, "dp", "distill.init=pretrained", parent=chain["finetune"])
    got = build(cfg, torch.device("cpu")).model.state_dict()
    backbone = [k for k in pre if k.startswith("backbone.")]
    assert backbone and all(torch.equal(got[k], pre[k]) for k in backbone)
    # the teacher was fine-tuned from head layer 1: the student keeps the same first head layer
    neck = [k for k in got if k.startswith("neck.")]
    assert neck and all(torch.equal(got[k], pre["head.layers." + k[len("neck."):]]) for k in neck)
    # or from the teacher itself
    teacher = ckpt.load_latest(chain["finetune"] / "checkpoints")[0]["model"]  # type: ignore[index]
    copy = build(cfg_for("distill", tmp_path, tiny_root, "dt", "distill.init=teacher", parent=chain["finetune"]),
                 torch.device("cpu")).model.state_dict()
    assert copy.keys() == teacher.keys() and all(torch.equal(copy[k], teacher[k]) for k in teacher)
    # the default student starts from scratch
    fresh = build(cfg_for("distill", tmp_path, tiny_root, "ds", parent=chain["finetune"]), torch.device("cpu")).model
    assert not torch.equal(fresh.state_dict()[backbone[0]], pre[backbone[0]])
    # a student of another architecture cannot start from that run: the error names the key
    with pytest.raises(ValueError, match="model.width"):
        build(cfg_for("distill", tmp_path, tiny_root, "dw", "distill.init=pretrained", "model.width=0.25",
                      parent=chain["finetune"]), torch.device("cpu"))
    # nor can a student whose teacher has no pretraining run (a supervised teacher)
    with pytest.raises(ValueError, match="distill.init"):
        build(cfg_for("distill", tmp_path, tiny_root, "dv", "distill.init=pretrained", parent=chain["supervised"]),
              torch.device("cpu"))
    with pytest.raises(ConfigError, match="distill.init"):
        cfg_for("distill", tmp_path, tiny_root, "dx", "distill.init=copy", parent=chain["finetune"])


def test_distill_teacher_can_label_the_clean_image(chain: dict[str, Path], tiny_root: Path, tmp_path: Path) -> None:
    from jobs.stages.distill import build, teacher_of
    from simclr.losses.distill import distillation_loss

    cfg = cfg_for("distill", tmp_path, tiny_root, "dc", "distill.teacher_view=clean", parent=chain["finetune"])
    parts = build(cfg, torch.device("cpu"))
    batch = next(iter(parts.loader.epoch_iter(0)))
    teacher = teacher_of(cfg, parts.loader.num_classes, torch.device("cpu"))
    loss, _ = parts.step_fn(parts.model, batch)
    student = parts.model(batch["image"])
    T = cfg.distill.temperature
    assert float(loss) == pytest.approx(float(distillation_loss(student, teacher(batch["clean"]), T)), rel=1e-5)
    # (a fresh student is nearly uniform: the two losses differ by ~5e-4, 20x the tolerance)
    assert float(loss) != pytest.approx(float(distillation_loss(student, teacher(batch["image"]), T)), rel=1e-5)


def _run_with_stops(cfg: StageConfig, stops: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Preempt the run after each number of steps in ``stops`` (counted from each restart), then finish."""
    import simclr.train.loop as loop

    for n in stops:
        calls = {"n": 0}

        def requested(n: int = n, calls: dict[str, int] = calls) -> bool:
            calls["n"] += 1
            return calls["n"] >= n

        monkeypatch.setattr(loop.preempt, "requested", requested)
        with pytest.raises(preempt.PreemptionRequested):
            run_stage(cfg)
    monkeypatch.setattr(loop.preempt, "requested", lambda: False)
    assert run_stage(cfg)["state"] == "done"


# SimCLRv2's memory: 50 entries, not a multiple of the batch of 32 (the queue wraps mid-batch at step 2, 4, 5, ...).
MEMORY = ["pretrain.memory_size=50", "pretrain.memory_momentum=0.9"]
MEMORY_POSITIVE = [*MEMORY, "pretrain.memory_positive=memory"]  # MoCo's positive


@pytest.mark.parametrize("stage, memory", [("pretrain", []), ("pretrain", MEMORY), ("pretrain", MEMORY_POSITIVE),
                                           ("finetune", []), ("linear_eval", []), ("supervised", []),
                                           ("distill", [])],
                         ids=["pretrain", "pretrain-memory", "pretrain-memory-positive", "finetune", "linear_eval",
                              "supervised", "distill"])
def test_stop_anywhere_and_resume_is_bit_identical(
    stage: str, memory: list[str], chain: dict[str, Path], tiny_root: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # 240 train images, batch 32: 7 steps per pretrain/distill epoch; fractions of 120 images: 3 steps.
    extra = ["train.epochs=2"] if stage in ("pretrain", "distill") else ["train.epochs=5"]
    extra += memory
    parent = chain.get(PARENT_STAGE.get(stage, ""))
    ref = cfg_for(stage, tmp_path, tiny_root, "ref", *extra, parent=parent)
    run = cfg_for(stage, tmp_path, tiny_root, "run", *extra, parent=parent)
    assert run_stage(ref)["state"] == "done"
    total = json.loads((Path(ref.run_dir) / "status.json").read_text())["step"]
    # three stops: one mid-epoch, one at an epoch boundary or later, one near the end
    _run_with_stops(run, [2, max(1, total // 2 - 2), max(1, total - total // 2 - 1)], monkeypatch)
    a_ckpt = ckpt.load_latest(Path(ref.run_dir) / "checkpoints")[0]  # type: ignore[index]
    b_ckpt = ckpt.load_latest(Path(run.run_dir) / "checkpoints")[0]  # type: ignore[index]
    a, b = a_ckpt["model"], b_ckpt["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ("memory" in a_ckpt) == ("memory" in b_ckpt) == bool(memory)
    if memory:  # the memory network, the queue and its pointer end identical too
        ma, mb = a_ckpt["memory"], b_ckpt["memory"]
        assert (ma["ptr"], ma["fill"]) == (mb["ptr"], mb["fill"]) == (total * 32 % 50, 50)
        assert torch.equal(ma["queue"], mb["queue"])
        for k in ma["network"]:
            assert torch.equal(ma["network"][k], mb["network"][k]), k

    def values(p: str) -> list[tuple[Any, ...]]:
        return [(m["step"], m["split"], m["name"], m["value"]) for m in metrics(Path(p)) if m["name"] not in TIMING]

    assert values(ref.run_dir) == values(run.run_dir)
    status = json.loads((Path(run.run_dir) / "status.json").read_text())
    assert status["restarts"] == 3
    assert status["final"] == json.loads((Path(ref.run_dir) / "status.json").read_text())["final"]


def _todays_pretrain_step(model: torch.nn.Module, batch: dict[str, Any], tau: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """pretrain's step function as it was before SimCLRv2's memory existed (jobs/stages/pretrain.py at bb9f60b)."""
    import torch.nn.functional as F

    from simclr.losses.ntxent import nt_xent

    out = model(torch.cat([batch["view1"], batch["view2"]]))
    z1, z2 = out["proj"].float().chunk(2)
    loss, logits, labels = nt_xent(z1, z2, tau)
    metrics = {"contrastive_loss": loss.detach(),
               "contrastive_acc": (logits.argmax(1) == labels).float().mean().detach() * 100}
    y = batch["label"].repeat(2)
    keep = (y >= 0).float()
    n = keep.sum()
    pl = out["probe_logits"].float()
    probe_loss = (F.cross_entropy(pl, y.clamp(min=0), reduction="none") * keep).sum() / n.clamp(min=1)
    nan = torch.full_like(n, float("nan"))
    metrics["probe_loss"] = torch.where(n > 0, probe_loss.detach(), nan)
    hit = ((pl.argmax(1) == y).float() * keep).sum()
    metrics["probe_top1"] = torch.where(n > 0, hit / n.clamp(min=1) * 100, nan).detach()
    return loss + probe_loss, metrics


def test_memory_off_is_todays_step_bit_for_bit_and_on_adds_negatives(tiny_root: Path, tmp_path: Path) -> None:
    """memory_size=0 (the default) is the step of before the memory, to the bit: loss, metrics, every gradient;
    and no memory entry in the checkpoint. With memory, the first step (empty queue) has the same loss, later
    steps have more negatives and log the monitors."""
    import copy

    from jobs.stages.pretrain import build

    torch.manual_seed(0)
    off = build(cfg_for("pretrain", tmp_path, tiny_root, "off"), torch.device("cpu"))
    assert off.state == {}
    batches = off.loader.epoch_iter(0)
    batch = next(batches)
    today = copy.deepcopy(off.model)
    loss, metrics = off.step_fn(off.model, batch)
    loss.backward()
    ref_loss, ref_metrics = _todays_pretrain_step(today, batch, 0.2)
    ref_loss.backward()
    assert torch.equal(loss, ref_loss)
    assert metrics.keys() == ref_metrics.keys()
    for k in metrics:
        assert torch.equal(torch.as_tensor(metrics[k]), ref_metrics[k]), k
    for (name, p), q in zip(off.model.named_parameters(), today.parameters()):
        assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), name

    torch.manual_seed(0)
    on = build(cfg_for("pretrain", tmp_path, tiny_root, "on", *MEMORY), torch.device("cpu"))
    assert set(on.state) == {"memory"}
    first, m1 = on.step_fn(on.model, batch)
    assert torch.equal(m1["contrastive_loss"], metrics["contrastive_loss"])  # empty queue: no extra negative
    assert float(m1["memory_fill"]) == 0.0 and torch.isnan(m1["memory_neg_sim"])
    second = next(batches)
    _, m2 = on.step_fn(on.model, second)
    _, plain = off.step_fn(off.model, second)  # same weights (no optimizer step on either)
    assert float(m2["memory_fill"]) == pytest.approx(32 / 50)
    assert float(m2["contrastive_loss"]) > float(plain["contrastive_loss"])  # 32 more negatives
    assert -1.0 <= float(m2["memory_neg_sim"]) <= 1.0 and -1.0 <= float(m2["batch_neg_sim"]) <= 1.0


def test_memory_monitors_reach_the_metrics_file(tiny_root: Path, tmp_path: Path) -> None:
    cfg = cfg_for("pretrain", tmp_path, tiny_root, "m", *MEMORY, "train.max_steps=3", "pretrain.knn_every_epochs=0")
    assert run_stage(cfg)["state"] == "done"
    rows = [m for m in metrics(Path(cfg.run_dir)) if m["split"] == "train"]
    fill = [m["value"] for m in rows if m["name"] == "memory_fill"]
    assert fill == pytest.approx([0.0, 32 / 50, 1.0])  # logged every step: the fill the loss saw
    queue = [(m["step"], m["value"]) for m in rows if m["name"] == "memory_neg_sim"]
    assert [s for s, _ in queue] == [2, 3]  # not measured while the queue was empty
    assert len([m for m in rows if m["name"] == "batch_neg_sim"]) == 3


@pytest.mark.parametrize("first, second", [((), MEMORY), (MEMORY, ())], ids=["plain-into-memory", "memory-into-plain"])
def test_a_checkpoint_with_or_without_memory_loads_only_into_its_kind(
    tiny_root: Path, tmp_path: Path, first: tuple[str, ...], second: tuple[str, ...]
) -> None:
    """The run folder's config check stops a changed config first; a checkpoint that reached another run's folder
    (copied by hand) is refused by the loop, naming the entry, and recorded as the failure."""
    import shutil

    from simclr.train.checkpoint import CheckpointMismatch

    a = cfg_for("pretrain", tmp_path, tiny_root, "a", *first, "train.max_steps=2", "pretrain.knn_every_epochs=0")
    assert run_stage(a)["state"] == "done"
    b = cfg_for("pretrain", tmp_path, tiny_root, "b", *second, "train.max_steps=4", "pretrain.knn_every_epochs=0")
    (Path(b.run_dir) / "checkpoints").mkdir(parents=True)
    for f in (Path(a.run_dir) / "checkpoints").iterdir():
        shutil.copy(f, Path(b.run_dir) / "checkpoints" / f.name)
    expected = "has no 'memory' entry" if second else "holds 'memory', which this run does not use"
    with pytest.raises(CheckpointMismatch, match=expected):
        run_stage(b)
    status = json.loads((Path(b.run_dir) / "status.json").read_text())
    assert status["state"] == "failed" and "'memory'" in status["reason"]


def test_invalid_config_fails_before_the_run_folder_is_touched(tiny_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.depth"):
        run_stage({"stage": "pretrain", "run_dir": str(tmp_path / "bad"), "data": {"root": str(tiny_root)}, "model": {"depth": 7}})
    assert not (tmp_path / "bad").exists()


def test_a_stage_that_cannot_start_records_why(tiny_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="label_fraction"):
        run_stage(cfg_for("supervised", tmp_path, tiny_root, "bad2", "finetune.label_fraction=0.2"))
    status = json.loads((tmp_path / "bad2" / "status.json").read_text())
    assert status["state"] == "failed" and "label_fraction=0.2" in status["reason"]


def test_a_done_run_is_not_run_again(chain: dict[str, Path]) -> None:
    cfg = json.loads((chain["supervised"] / "config.json").read_text())
    before = (chain["supervised"] / "status.json").read_text()
    assert run_stage(cfg)["state"] == "done"
    assert (chain["supervised"] / "status.json").read_text() == before


def test_a_run_folder_refuses_another_config(chain: dict[str, Path]) -> None:
    """A done run asked again with another recipe must not hand back the old recipe's result (a benchmark
    once reported a LARS run's figures under the SGD recipe it was rerun with)."""
    run = chain["supervised"]
    cfg = json.loads((run / "config.json").read_text())
    before = (run / "status.json").read_text()
    changed = {**cfg, "optim": {**cfg["optim"], "base_lr": cfg["optim"]["base_lr"] * 2}}
    with pytest.raises(ConfigError, match=r"optim\.base_lr: 0\.05 -> 0\.1"):
        run_stage(changed)
    assert (run / "status.json").read_text() == before
    # The speed and bookkeeping knobs of the job may change between starts.
    free = {**cfg, "train": {**cfg["train"], "threads": 1, "log_every": 7, "checkpoint_every": 3}}
    assert run_stage(free)["state"] == "done"
    assert (run / "status.json").read_text() == before


def test_resuming_under_another_config_is_refused(tiny_root: Path, tmp_path: Path) -> None:
    cfg = cfg_for("supervised", tmp_path, tiny_root, "half", "train.epochs=2")
    run = RunFolder(cfg.run_dir, stage="supervised")
    run.write_config(to_dict(cfg))  # a run that started (its config and perhaps checkpoints are there)
    with pytest.raises(ConfigError, match=r"seed: 0 -> 1"):
        run_stage(cfg_for("supervised", tmp_path, tiny_root, "half", "train.epochs=2", "seed=1"))
    assert not run.status_path.exists()  # nothing written into the other run's folder
    (Path(cfg.run_dir) / "config.json").write_text("{trunc")
    with pytest.raises(ConfigError, match="config.json: unreadable"):
        run_stage(cfg)


def test_knn_monitor_runs_every_n_th_epoch(tiny_root: Path, tmp_path: Path) -> None:
    """pretrain.knn_every_epochs=2 measured kNN at every epoch (the value only switched it on or off)."""
    from jobs.stages.pretrain import build

    parts = build(cfg_for("pretrain", tmp_path, tiny_root, "p", "pretrain.knn_every_epochs=2"), torch.device("cpu"))
    (knn,) = parts.evaluators
    parts.model.eval()
    with torch.no_grad():
        assert knn(parts.model, 0) == {} and knn(parts.model, 2) == {}
        assert 0 <= knn(parts.model, 1)["knn_top1"] <= 100


def test_a_stage_refuses_splits_numbered_differently(tiny_root: Path, tmp_path: Path) -> None:
    """Shards whose test split has another class list (written per split): scored against the wrong classes."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    m = json.loads((root / "test" / "manifest.json").read_text())
    m["class_names"] = list(reversed(m["class_names"]))
    (root / "test" / "manifest.json").write_text(json.dumps(m))
    from jobs.stages.supervised import build

    with pytest.raises(ValueError, match="split 'test' has the classes"):
        build(cfg_for("supervised", tmp_path, root, "s"), torch.device("cpu"))


@pytest.fixture(scope="module")
def half_unlabelled_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_root's 240 train images with every other one unlabelled (label -1, STL-10 style; 120 labelled,
    no fraction lists) and tiny_root's labelled test split."""
    import shutil

    from simclr.data.shards.sources import array_samples
    from simclr.data.shards.sources.fashion_mnist import fashion_mnist_samples
    from simclr.data.shards.write import write_shards

    src = fashion_mnist_samples("test")
    root = tmp_path_factory.mktemp("half_unlabelled")
    labels = src.labels[:240].astype("int64")
    labels[1::2] = -1
    write_shards(array_samples(src.images[:240], labels, list(src.class_names), key_prefix="tr"), root,
                 split="train", max_count=64)
    shutil.copytree(tiny_root / "test", root / "test")
    return root


@pytest.mark.parametrize("stage", ["supervised", "linear_eval", "finetune"])
def test_all_labels_means_the_labelled_samples_of_a_partly_unlabelled_split(
    stage: str, chain: dict[str, Path], half_unlabelled_root: Path, tmp_path: Path
) -> None:
    """label_fraction=1.0 (linear_eval's default) loaded the unlabelled samples too: -1 targets crashed the
    cross-entropy (CPU IndexError, CUDA device assert)."""
    import torch.nn.functional as F

    parent = chain.get(PARENT_STAGE.get(stage, ""))
    cfg = cfg_for(stage, tmp_path, half_unlabelled_root, stage, "train.epochs=1", "finetune.label_fraction=1.0",
                  parent=parent)
    status = run_stage(cfg)
    assert status["state"] == "done", status
    assert status["step"] == status["total_steps"] == 120 // 32  # the 120 labelled samples only, not 240
    parts = BUILDERS[stage](cfg, torch.device("cpu"))
    assert parts.loader.num_samples == 120
    batches = list(parts.loader.epoch_iter(0))
    assert all(k[-1] in "02468" for b in batches for k in b["key"])  # the even keys are the labelled ones
    assert all(bool((b["label"] >= 0).all()) for b in batches)
    # A -1 slot that still reaches the step (a bad image's substitute in the eval-mode loader of
    # finetune.augment=false with a bad-sample budget, the one loader that hands them out) counts for nothing.
    cfg = cfg_for(stage, tmp_path, half_unlabelled_root, stage + "-noaug", "finetune.label_fraction=1.0",
                  "finetune.augment=false", "data.bad_sample_budget=1", parent=parent)
    parts = BUILDERS[stage](cfg, torch.device("cpu"))
    b = batches[0]
    b["label"][:5] = -1
    loss, _ = parts.step_fn(parts.model, b)
    expected = F.cross_entropy(parts.model(b["image"])[5:], b["label"][5:])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_distill_label_weight_uses_every_label_at_fraction_one(
    chain: dict[str, Path], half_unlabelled_root: Path, tmp_path: Path
) -> None:
    """At label_fraction=1.0 the labelled set was empty, so distill.label_weight silently did nothing."""
    import torch.nn.functional as F

    from jobs.stages.distill import build, teacher_of
    from simclr.losses.distill import distillation_loss

    def parts_for(weight: float) -> Any:
        return build(cfg_for("distill", tmp_path, half_unlabelled_root, f"d{weight}", "finetune.label_fraction=1.0",
                             f"distill.label_weight={weight}", parent=chain["finetune"]), torch.device("cpu"))

    full = parts_for(1.0)
    assert full.loader.num_samples == 240  # distillation still sees the unlabelled images
    batch = next(iter(full.loader.epoch_iter(0)))
    labelled = batch["label"] >= 0
    assert 0 < int(labelled.sum()) < len(labelled)
    student = full.model(batch["image"])
    loss, _ = full.step_fn(full.model, batch)
    # label_weight=1: exactly the cross-entropy over the batch's labelled rows (the unlabelled ones ignored)
    expected = F.cross_entropy(student[labelled], batch["label"][labelled])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and loss.item() > 0
    # label_weight=0: the distillation term alone, a different loss (before the fix the two were 0 and it)
    none = parts_for(0.0)
    none.model.load_state_dict(full.model.state_dict())
    loss0, _ = none.step_fn(none.model, batch)
    cfg0 = cfg_for("distill", tmp_path, half_unlabelled_root, "d0.0", parent=chain["finetune"])
    teacher = teacher_of(cfg0, full.loader.num_classes, torch.device("cpu"))
    T = cfg0.distill.temperature
    assert loss0.item() == pytest.approx(distillation_loss(none.model(batch["image"]), teacher(batch["image"]), T).item(),
                                         rel=1e-5)
    # (No "the two differ" check: for a student near chance both are close to ln(10), and the CE check above is
    # what fails on the old code, whose label_weight=1 loss was (1 - 1) x distillation = 0.)


def test_a_student_started_from_the_pretraining_run_can_teach_the_next_round(
        chain: dict[str, Path], tiny_root: Path, tmp_path: Path) -> None:
    """Its checkpoint carries the kept head layers (neck.*): rebuilt with an Identity neck as a teacher, the
    strict load failed ('Unexpected key(s) in state_dict: neck.0...')."""
    first = cfg_for("distill", tmp_path, tiny_root, "r1", "distill.init=pretrained", "train.max_steps=2",
                    parent=chain["finetune"])
    assert run_stage(first)["state"] == "done"
    second = cfg_for("distill", tmp_path, tiny_root, "r2", "train.max_steps=2", parent=Path(first.run_dir))
    status = run_stage(second)
    assert status["state"] == "done", status


def test_the_report_flags_a_short_run_as_not_converged(chain: dict[str, Path]) -> None:
    """Real curves (issue 16): the chain's supervised run (4 epochs on 300 labelled images, crop + flip) ends far
    below fitting its images, as `make demo`'s 1% baselines did before they were sized to converge."""
    from analysis.runfolder import read_run

    row = read_run(chain["supervised"]).row
    assert row["converged"] == "false", row["convergence_note"]
    assert row["convergence_note"].startswith("train top-1 ")
    assert row["labelled_images_seen"] == row["step"] * 32 and row["epochs_done"] == 4.0


def _shape(value: Any) -> Any:
    """A record's keys and value types, recursively (what a reader relies on, not the numbers)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


def test_synthetic_run_folders_are_what_the_loop_writes(chain: dict[str, Path], tmp_path: Path) -> None:
    """analysis.synthetic (the report's tests and benchmark) writes the files, keys and value types of a real
    run of each stage, and logs no series the stage does not log."""
    from analysis.synthetic import write_run

    for stage, real in chain.items():
        parent = {"finetune": chain["pretrain"], "linear_eval": chain["pretrain"], "distill": chain["finetune"]}.get(stage)
        parent = str(parent) if parent is not None else None
        accuracy: dict[str, Any] = ({"final": {"test/knn_top1": 30.0}} if stage == "pretrain" else
                                    {"top1": 50.0, "top5": 90.0})
        fake = write_run(tmp_path, stage=stage, label_fraction=0.5, sweep=None, **accuracy,
                         teacher=parent if stage == "distill" else None,
                         parent=parent if stage != "distill" else None)
        assert sorted(p.name for p in fake.iterdir()) == sorted(p.name for p in real.iterdir()), stage
        for name in ("config.json", "progress.json"):
            assert _shape(json.loads((fake / name).read_text())) == _shape(json.loads((real / name).read_text())), \
                (stage, name)
        fake_status, real_status = (json.loads((r / "status.json").read_text()) for r in (fake, real))
        assert _shape({**fake_status, "final": {}}) == _shape({**real_status, "final": {}}), stage
        assert {type(v) for v in fake_status["final"].values()} == {type(v) for v in real_status["final"].values()}
        fake_lines, real_lines = metrics(fake), metrics(real)
        assert {json.dumps(_shape(m)) for m in fake_lines} == {json.dumps(_shape(m)) for m in real_lines}, stage
        assert {(m["split"], m["name"]) for m in fake_lines} <= {(m["split"], m["name"]) for m in real_lines}, stage
        assert yaml.safe_load((fake / "config.yaml").read_text()) == json.loads((fake / "config.json").read_text())


def test_a_root_indexed_in_place_trains_exactly_like_our_own(chain: dict[str, Path], tiny_root: Path,
                                                              tmp_path: Path) -> None:
    """Our own shards are WebDataset tars: indexed in place (with the label lists imported by key), pretraining
    and fine-tuning on that root give the very same numbers, step by step."""
    from simclr.data.shards.fractions import import_key_list
    from simclr.data.shards.inplace import index_webdataset
    from simclr.data.shards.manifest import Manifest

    root = tmp_path / "inplace"
    for split in ("train", "test"):
        m = Manifest.load(tiny_root / split)
        index_webdataset([s.tar_path(tiny_root / split) for s in m.shards], root, split=split,
                         class_names=m.class_names)
    for name in ("10percent", "50percent"):
        import_key_list(root, name, tiny_root / "train" / "fractions" / f"{name}.txt")

    def values(run: Path) -> list[tuple[Any, ...]]:
        return [(m["step"], m["split"], m["name"], m["value"]) for m in metrics(run) if m["name"] not in TIMING]

    for stage, parent in (("pretrain", None), ("finetune", chain["pretrain"])):
        ours = cfg_for(stage, tmp_path, tiny_root, f"{stage}-ours", "train.epochs=1", parent=parent)
        theirs = cfg_for(stage, tmp_path, root, f"{stage}-inplace", "train.epochs=1", parent=parent)
        assert run_stage(ours)["state"] == "done" and run_stage(theirs)["state"] == "done"
        assert values(Path(ours.run_dir)) == values(Path(theirs.run_dir)) != []


def test_memory_positive_takes_the_memory_networks_projection_of_the_other_view(tiny_root: Path,
                                                                             tmp_path: Path) -> None:
    """pretrain.memory_positive=memory (MoCo's positive). At the first step the memory network equals the online
    one and sees the same BN batch (both views), so its positives equal the online ones: the loss of plain
    SimCLR, but no gradient through the positive; its view-2 projections are what the queue gets."""
    import torch.nn.functional as F

    from jobs.stages.pretrain import build

    torch.manual_seed(0)
    off = build(cfg_for("pretrain", tmp_path, tiny_root, "off"), torch.device("cpu"))
    batch = next(off.loader.epoch_iter(0))
    torch.manual_seed(0)
    on = build(cfg_for("pretrain", tmp_path, tiny_root, "pos", *MEMORY_POSITIVE), torch.device("cpu"))
    with torch.no_grad():  # the online projections (train-mode BN: the same as the step's)
        h1, h2 = F.normalize(on.model(torch.cat([batch["view1"], batch["view2"]]))["proj"].float(), dim=1).chunk(2)
    plain, mp = off.step_fn(off.model, batch)
    keyed, mk = on.step_fn(on.model, batch)
    assert float(mk["contrastive_loss"]) == pytest.approx(float(mp["contrastive_loss"]), rel=1e-5)
    assert torch.equal(mk["contrastive_acc"], mp["contrastive_acc"])  # the online views' accuracy, as before
    assert float(mk["memory_pos_sim"]) == pytest.approx(float((h1 * h2).sum(1).mean()), abs=1e-5)
    plain.backward()
    keyed.backward()
    g_off = torch.cat([p.grad.flatten() for p in off.model.backbone.parameters() if p.grad is not None])
    g_on = torch.cat([p.grad.flatten() for p in on.model.backbone.parameters() if p.grad is not None])
    assert not torch.allclose(g_off, g_on, atol=1e-6)  # the positive's side gets no gradient
    queue = on.state["memory"].negatives()  # the pending keys enqueued: view 2's
    assert queue.shape == h2.shape and torch.allclose(queue, h2, atol=1e-5)


@pytest.mark.parametrize("memory", [MEMORY, MEMORY_POSITIVE], ids=["online-positive", "memory-positive"])
def test_the_memory_network_moves_once_per_step(memory: list[str], tiny_root: Path, tmp_path: Path) -> None:
    """One EMA step per training step, towards the online weights as the last optimizer step left them: online
    weights moved by +1 between two steps take the memory network (m 0.9) from w to w + 0.1, not w + 0.19."""
    from jobs.stages.pretrain import build

    torch.manual_seed(0)
    parts = build(cfg_for("pretrain", tmp_path, tiny_root, "ema", *memory), torch.device("cpu"))
    batches = parts.loader.epoch_iter(0)
    parts.step_fn(parts.model, next(batches))
    start = [p.detach().clone() for p in parts.state["memory"].network.parameters()]
    with torch.no_grad():
        for p in list(parts.model.backbone.parameters()) + list(parts.model.head.parameters()):
            p.add_(1.0)
    parts.step_fn(parts.model, next(batches))
    for before, after in zip(start, parts.state["memory"].network.parameters()):
        assert torch.allclose(after, before + 0.1, atol=1e-5)
