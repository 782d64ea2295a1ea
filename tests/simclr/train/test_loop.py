"""The one training loop: exact resume, damaged checkpoints, status written last, preemption."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simclr.train import checkpoint as ckpt
from simclr.train import preempt
from simclr.train.loop import LoopSettings, fit
from simclr.runfolder.write import RunFolder

TIMING = {"images_per_s"}


class ArrayLoader:
    """An in-memory loader whose order is a function of (seed, epoch), like the shard loader."""

    def __init__(self, n: int = 40, batch: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 6, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.batch, self.seed = batch, seed

    def __len__(self) -> int:
        return len(self.x) // self.batch

    def epoch_iter(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        for i in range(start_step, len(self)):
            idx = perm[i * self.batch : (i + 1) * self.batch]
            yield {"x": self.x[idx], "label": self.y[idx]}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    # Dropout makes the RNG state part of what must be restored exactly.
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def train(run_dir: Path, *, stop_at: int | None = None, epochs: int = 3, ckpt_every: int = 4,
          device: str = "cpu", signal_in_eval: bool = False, final_eval_fails: bool = False,
          signal_in_final_eval: bool = False) -> dict:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = ArrayLoader()

    def step_fn(module: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        out = module(batch["x"])
        loss = F.cross_entropy(out, batch["label"])
        return loss, {"acc": (out.argmax(1) == batch["label"]).float().mean()}

    calls = {"n": 0}

    def lr_at(step: int) -> float:
        calls["n"] += 1
        if stop_at is not None and step == stop_at - 1:
            preempt.request()  # seen by the loop right after this step
        return 0.1 * (1 - step / 100)

    def evaluate(m: nn.Module, epoch: int) -> dict:
        if signal_in_eval and epoch == 0:
            preempt.request()  # the signal arrives while the epoch-end evaluation runs
        return {"val_w": float(m[0].weight.sum())}

    def final(m: nn.Module) -> dict:
        if final_eval_fails:
            raise RuntimeError("killed during the final evaluation")
        if signal_in_final_eval:
            import os
            import signal
            import time

            os.kill(os.getpid(), signal.SIGUSR2)  # the time limit's warning, during a long evaluation
            time.sleep(30)
            raise AssertionError("the signal did not end the final evaluation")
        return {"top1": 50.0}

    preempt.clear()
    try:
        res = fit(
            run=RunFolder(run_dir, stage="test"),
            model=model,
            loader=loader,
            optimizer=opt,
            lr_at=lr_at,
            step_fn=step_fn,
            settings=LoopSettings(epochs=epochs, log_every=1, checkpoint_every=ckpt_every, keep_checkpoints=2, channels_last=False),
            config={"stage": "test"},
            device=torch.device(device),
            evaluators=(evaluate,),
            final_eval=final,
        )
    finally:
        preempt.clear()
    return {"state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, "status": res.status}


def metric_values(run_dir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["epoch"], r["split"], r["name"], r["value"]) for r in rows if r["name"] not in TIMING]


@pytest.mark.parametrize("stops", [[3], [5, 11], [10]])  # mid-epoch, two restarts, epoch boundary
def test_resume_is_bit_identical(tmp_path: Path, stops: list[int]) -> None:
    ref = train(tmp_path / "ref")
    run = tmp_path / "run"
    for s in stops:
        with pytest.raises(preempt.PreemptionRequested) as e:
            train(run, stop_at=s)
        assert e.value.step == s
        assert not (run / "status.json").exists()
        assert json.loads((run / "progress.json").read_text())["step"] == s
    out = train(run)
    for k, v in ref["state"].items():
        assert torch.equal(v, out["state"][k]), k
    assert metric_values(run) == metric_values(tmp_path / "ref")
    assert out["status"]["restarts"] == len(stops)
    assert out["status"]["step"] == ref["status"]["step"] == 15


def test_a_signal_during_the_epoch_end_evaluation_stops_right_after_it(tmp_path: Path) -> None:
    """It used to wait for the next step (an evaluation longer than the signal's lead time: killed, no
    checkpoint, no requeue)."""
    ref = train(tmp_path / "ref")
    run = tmp_path / "run"
    with pytest.raises(preempt.PreemptionRequested) as e:
        train(run, signal_in_eval=True)
    assert e.value.step == 5  # the end of epoch 0 (40 samples / batch 8): no step after the evaluation
    out = train(run)
    for k, v in ref["state"].items():
        assert torch.equal(v, out["state"][k]), k
    assert metric_values(run) == metric_values(tmp_path / "ref")


def test_the_trained_model_is_saved_before_the_final_evaluation(tmp_path: Path) -> None:
    """A job killed during the final evaluation resumes from the last step, not from the last periodic
    checkpoint (12 of 15 steps here)."""
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="final evaluation"):
        train(run, final_eval_fails=True)
    assert ckpt.list_checkpoints(run / "checkpoints")[-1].name == "ckpt-00000015.pt"
    out = train(run)
    assert out["status"]["restarts"] == 1 and out["status"]["final"] == {"test/top1": 50.0}
    ref = train(tmp_path / "ref")
    assert metric_values(run) == metric_values(tmp_path / "ref")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_is_bit_identical(tmp_path: Path) -> None:
    """A checkpoint written on the GPU resumes there (its RNG states came back as CUDA tensors and broke
    ``set_rng_state`` when the loop loaded it with ``map_location=device``)."""
    ref = train(tmp_path / "ref", device="cuda")
    with pytest.raises(preempt.PreemptionRequested):
        train(tmp_path / "run", stop_at=5, device="cuda")
    out = train(tmp_path / "run", device="cuda")
    assert out["status"]["restarts"] == 1
    for k, v in ref["state"].items():
        assert torch.equal(v, out["state"][k]), k


def test_rng_state_restores_from_tensors_loaded_anywhere() -> None:
    """``set_rng_state`` takes the saved states whatever device a load put them on (CPU copies are made)."""
    saved = ckpt.rng_state()
    a = torch.rand(3)
    ckpt.set_rng_state(saved)
    assert torch.equal(torch.rand(3), a)
    if torch.cuda.is_available():
        moved = {**saved, "torch": saved["torch"].cuda(), "numpy": [saved["numpy"][0], saved["numpy"][1].cuda(),
                                                                    *saved["numpy"][2:]]}
        ckpt.set_rng_state(moved)
        assert torch.equal(torch.rand(3), a)


def test_done_status_written_last_and_final_checkpoint(tmp_path: Path) -> None:
    out = train(tmp_path / "r")
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["state"] == "done" and status["final"] == {"test/top1": 50.0}
    assert status["params"] == sum(p.numel() for p in make_model().parameters())
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "r" / "checkpoints")]
    assert names == ["ckpt-00000012.pt", "ckpt-00000015.pt"]  # the last K=2, the final one included
    assert out["status"]["state"] == "done"


def test_truncated_latest_checkpoint_falls_back_to_previous(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ref = train(tmp_path / "ref")
    run = tmp_path / "run"
    with pytest.raises(preempt.PreemptionRequested):
        train(run, stop_at=10)  # checkpoints at 8 and 10 (periodic every 4 + the preemption one)
    latest = ckpt.list_checkpoints(run / "checkpoints")[-1]
    assert latest.name == "ckpt-00000010.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        out = train(run)
    assert "ckpt-00000010.pt does not load" in caplog.text
    for k, v in ref["state"].items():
        assert torch.equal(v, out["state"][k]), k
    assert metric_values(run) == metric_values(tmp_path / "ref")


def test_truncated_metrics_line_is_dropped_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(preempt.PreemptionRequested):
        train(run, stop_at=6)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "epo')  # a writer killed mid-line after the checkpoint
    train(run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    assert metric_values(run) == metric_values(train(tmp_path / "ref") and tmp_path / "ref")


def test_save_checkpoint_keeps_last_k_and_is_atomic(tmp_path: Path) -> None:
    for s in range(1, 6):
        ckpt.save_checkpoint(tmp_path, s, {"step": s, "w": torch.ones(3) * s}, keep=3)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [f"ckpt-{s:08d}.pt" for s in (3, 4, 5)]
    assert not list(tmp_path.glob("*.tmp"))
    state, path = ckpt.load_latest(tmp_path)  # type: ignore[misc]
    assert state["step"] == 5 and path.name == "ckpt-00000005.pt"


def test_a_damaged_newest_checkpoint_never_pushes_the_good_ones_out(tmp_path: Path) -> None:
    """keep=1: resumed from step 100 past a damaged step-150 file, the next save (125) used to keep only the
    damaged 150 and delete 100 and 125, so the restart after that began from nothing."""
    d = tmp_path / "ck"
    d.mkdir()
    ckpt.save_checkpoint(d, 100, {"step": 100}, keep=1)
    ckpt.checkpoint_path(d, 150).write_bytes(b"torn")
    state, path = ckpt.load_latest(d)  # type: ignore[misc]
    assert path.name == "ckpt-00000100.pt"
    ckpt.save_checkpoint(d, 125, {"step": 125}, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(d)] == ["ckpt-00000125.pt"]
    assert ckpt.load_latest(d)[0]["step"] == 125  # type: ignore[index]


def test_all_checkpoints_damaged_starts_fresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "ckpt-00000001.pt").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        assert ckpt.load_latest(tmp_path) is None
    assert "does not load" in caplog.text


def test_a_restart_without_a_loadable_checkpoint_logs_every_step_once(tmp_path: Path) -> None:
    """An attempt that died before its first checkpoint (or whose checkpoints are all lost) left its lines:
    the rerun from step 0 appended after them, and steps 1-6 were in metrics.jsonl twice."""
    import shutil

    run = tmp_path / "run"
    with pytest.raises(preempt.PreemptionRequested):
        train(run, stop_at=6)
    shutil.rmtree(run / "checkpoints")
    train(run)
    assert metric_values(run) == metric_values(train(tmp_path / "ref") and tmp_path / "ref")


def test_a_metrics_file_shorter_than_its_checkpoint_offset_is_not_padded(tmp_path: Path) -> None:
    """A node crash lost the file's tail after the checkpoint stored its offset: truncate() past the end
    padded the file with NUL bytes, and the first line logged after the resume was unreadable."""
    run = tmp_path / "run"
    with pytest.raises(preempt.PreemptionRequested):
        train(run, stop_at=6)
    text = (run / "metrics.jsonl").read_bytes()
    # the last line lost, and the one before it cut mid-line
    (run / "metrics.jsonl").write_bytes(text[: text.rindex(b"\n", 0, len(text) - 1) - 10])
    train(run)
    data = (run / "metrics.jsonl").read_bytes()
    assert b"\0" not in data and all(json.loads(line) for line in data.decode().splitlines())
    assert max(r[0] for r in metric_values(run)) == 15  # 3 epochs of 5 steps, every line after the resume kept


def _fit_fails_unsaved(run_dir: Path, model: nn.Module, step_fn: Callable[[nn.Module, dict], tuple],
                       checkpoint_every: int) -> None:
    """Train ``model`` with ``step_fn``, logging only every 100 steps; the loop must refuse a checkpoint."""
    with pytest.raises(FloatingPointError, match="not checkpointed"):
        fit(run=RunFolder(run_dir, stage="test"), model=model, loader=ArrayLoader(),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1), lr_at=lambda s: 0.1, step_fn=step_fn,
            settings=LoopSettings(epochs=3, log_every=100, checkpoint_every=checkpoint_every, keep_checkpoints=2,
                                  channels_last=False),
            config={"stage": "test"}, device=torch.device("cpu"))


def test_a_model_gone_nan_between_log_steps_is_never_checkpointed(tmp_path: Path) -> None:
    """The loss was checked on log steps only: with log_every=100 the NaN model of step 4 was saved."""
    model = make_model()
    seen = {"n": 0}

    def step_fn(module: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        seen["n"] += 1
        loss = F.cross_entropy(module(batch["x"]), batch["label"])
        return (loss * float("nan") if seen["n"] >= 3 else loss), {}

    _fit_fails_unsaved(tmp_path, model, step_fn, checkpoint_every=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["ckpt-00000002.pt"]


def test_a_signal_during_the_final_evaluation_requeues_at_once(tmp_path: Path) -> None:
    """The flag was set and never looked at again: an evaluation longer than the signal's lead time ran into
    the time limit (TIMEOUT, not requeued; its dependants were cancelled)."""
    import signal

    run = tmp_path / "run"
    previous = preempt.install((signal.SIGUSR2,))
    try:
        with pytest.raises(preempt.PreemptionRequested) as e:
            train(run, signal_in_final_eval=True)
    finally:
        preempt.restore(previous)
    assert e.value.step == 15 and e.value.signum == signal.SIGUSR2
    assert not (run / "status.json").exists() or json.loads((run / "status.json").read_text())["state"] != "done"
    out = train(run)  # the restart only evaluates
    assert out["status"]["state"] == "done" and out["status"]["final"] == {"test/top1": 50.0}
    assert metric_values(run) == metric_values(train(tmp_path / "ref") and tmp_path / "ref")


def test_weights_gone_nan_with_a_finite_loss_are_never_checkpointed(tmp_path: Path) -> None:
    """The loss is of the step before the update: a finite loss followed by an update to NaN was saved."""
    model = make_model()
    seen = {"n": 0}

    def step_fn(module: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        seen["n"] += 1
        if seen["n"] == 3:
            with torch.no_grad():
                module[0].weight[0, 0] = float("nan")  # the update before this step went wrong
        return F.cross_entropy(module(batch["x"]), batch["label"]).nan_to_num(1.0), {}

    _fit_fails_unsaved(tmp_path, model, step_fn, checkpoint_every=4)
    assert ckpt.list_checkpoints(tmp_path / "checkpoints") == []


def test_interruptible_raises_only_where_it_was_entered() -> None:
    """Data-loader workers are forked copies: the signal reaches them too, and one that raised would die and
    fail the job. Ranks other than 0 (enabled=False) leave the requeue to rank 0."""
    import multiprocessing
    import os
    import signal

    previous = preempt.install((signal.SIGUSR2,))
    preempt.clear()
    try:
        with preempt.interruptible(7, enabled=False):
            os.kill(os.getpid(), signal.SIGUSR2)
        assert preempt.requested()  # the flag only
        preempt.clear()
        with pytest.raises(preempt.PreemptionRequested):
            with preempt.interruptible(7):
                child = multiprocessing.get_context("fork").Process(
                    target=lambda: os.kill(os.getpid(), signal.SIGUSR2))  # a forked worker gets the signal
                child.start()
                child.join(30)
                assert child.exitcode == 0  # it did not raise
                os.kill(os.getpid(), signal.SIGUSR2)
                raise AssertionError("not interrupted")
    finally:
        preempt.restore(previous)
        preempt.clear()


class Counter:
    """A stage's state beside the model (as pretraining's memory): counts the steps it saw."""

    def __init__(self) -> None:
        self.n = torch.zeros((), dtype=torch.long)

    def state_dict(self) -> dict:
        return {"n": self.n.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.n = state["n"].clone()


def _fit_with(run_dir: Path, state: dict, stop_at: int | None = None) -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step_fn(module: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        for s in state.values():
            s.n += 1
        return F.cross_entropy(module(batch["x"]), batch["label"]), {}

    def lr_at(step: int) -> float:
        if stop_at is not None and step == stop_at - 1:
            preempt.request()
        return 0.1

    preempt.clear()
    try:
        fit(run=RunFolder(run_dir, stage="test"), model=model, loader=ArrayLoader(), optimizer=opt, lr_at=lr_at,
            step_fn=step_fn, settings=LoopSettings(epochs=2, log_every=1, checkpoint_every=100, channels_last=False),
            config={"stage": "test"}, device=torch.device("cpu"), state=state)
    finally:
        preempt.clear()


def test_a_stages_state_is_checkpointed_and_restored_under_its_name(tmp_path: Path) -> None:
    with pytest.raises(preempt.PreemptionRequested):
        _fit_with(tmp_path / "r", {"memory": Counter()}, stop_at=3)
    saved = ckpt.load_latest(tmp_path / "r" / "checkpoints")
    assert saved is not None and saved[0]["memory"] == {"n": torch.tensor(3)}
    counter = Counter()
    _fit_with(tmp_path / "r", {"memory": counter})
    assert int(counter.n) == 10  # 3 before the stop, restored, then the 7 steps left of 2 epochs of 5


def test_a_checkpoint_of_another_config_is_refused_naming_the_entry(tmp_path: Path) -> None:
    with pytest.raises(preempt.PreemptionRequested):
        _fit_with(tmp_path / "plain", {}, stop_at=2)
    with pytest.raises(ckpt.CheckpointMismatch, match="has no 'memory' entry"):
        _fit_with(tmp_path / "plain", {"memory": Counter()})
    with pytest.raises(preempt.PreemptionRequested):
        _fit_with(tmp_path / "mem", {"memory": Counter()}, stop_at=2)
    with pytest.raises(ckpt.CheckpointMismatch, match="holds 'memory', which this run does not use"):
        _fit_with(tmp_path / "mem", {})
    with pytest.raises(ValueError, match="loop's own"):
        _fit_with(tmp_path / "x", {"model": Counter()})
