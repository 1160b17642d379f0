"""The one-cycle schedule: torch's numbers on a plain run, and a run's own plan when resumed, short or cut short."""

import math

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from conftest import make_reviews, run_cli, write_csv

from sentiment.training.schedules import OneCycle


def _optimizer(lrs=(4e-3, 0.05)):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    return torch.optim.AdamW([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])


def _run(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append([value for g in optimizer.param_groups for value in (g["lr"], g["betas"][0])])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("total, pct", [(50, 0.1), (1055, 0.1), (333, 0.3)])
def test_one_cycle_gives_torch_s_numbers_on_a_plain_run(total, pct):
    ours, theirs = _optimizer(), _optimizer()
    expected = _run(torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=[4e-3, 0.05], total_steps=total,
                                                        pct_start=pct), theirs, total)
    got = _run(OneCycle(ours, max_lr=[4e-3, 0.05], total_steps=total, pct_start=pct), ours, total)
    assert len(got) == total
    for ours_then, theirs_then in zip(got, expected):  # every group's learning rate and beta1, step by step
        assert ours_then == pytest.approx(theirs_then, rel=1e-12, abs=1e-15)


def test_a_plan_too_short_to_warm_up_starts_at_the_peak():
    # 10 steps warming up for a tenth of them: torch's OneCycleLR divides by zero at the first step
    optimizer = _optimizer()
    lrs = [step[0] for step in _run(OneCycle(optimizer, max_lr=[4e-3, 0.05], total_steps=10, pct_start=0.1),
                                    optimizer, 10)]
    assert lrs[0] == pytest.approx(4e-3) and all(math.isfinite(lr) for lr in lrs)
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(4e-3 / 25 / 1e4)


def test_a_resumed_run_with_a_longer_plan_stretches_the_cycle():
    first = _optimizer()
    done = OneCycle(first, max_lr=[4e-3, 0.05], total_steps=30, pct_start=0.1)
    _run(done, first, 30)
    optimizer = _optimizer()
    resumed = OneCycle(optimizer, max_lr=[4e-3, 0.05], total_steps=60, pct_start=0.1)
    optimizer.load_state_dict(first.state_dict())
    resumed.load_state_dict(done.state_dict())
    assert resumed.total_steps == 60 and resumed.last_epoch == 30
    lrs = [step[0] for step in _run(resumed, optimizer, 31)]  # steps 30 to 60: one more than the plan, at its end
    plain = _optimizer()
    whole = [step[0] for step in _run(OneCycle(plain, max_lr=[4e-3, 0.05], total_steps=60, pct_start=0.1), plain,
                                      60)]
    assert lrs[:30] == pytest.approx(whole[30:], rel=1e-12)  # where a run planned for 60 steps would be
    assert lrs[-1] == pytest.approx(4e-3 / 25 / 1e4)


def test_fit_resumes_to_more_epochs_and_runs_plans_of_a_few_steps(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(t, "pos" if y else "neg") for t, y in make_reviews(200)])
    common = ["fit", "--data.train_file", str(train), "--data.data_dir", str(tmp_path / "data"),
              "--data.loader.min_epoch_size", "0", "--data.encoding.min_freq", "1", "--data.loader.batch_size", "18",
              "--model.net.hidden_dim", "8", "--model.net.embed_dim", "8", "--model.adversarial", "0",
              "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    assert run_cli(*common, "--trainer.max_epochs", "1") == 0  # 180 training reviews: 10 steps
    assert run_cli(*common, "--trainer.max_epochs", "2", "--ckpt_path", "last") == 0
    run = tmp_path / "lightning_logs" / "version_0"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 20
    # TensorBoard's hparams tab: the first start's placeholder, then each validation's value, none written over
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    values = [e.value for e in events.Scalars("hp/val_acc")]
    assert len(values) == 3 and values[0] == 0.0 and min(values[1:]) > 0
    # and every hyperparameter once, without LightningCLI's or the download's bookkeeping
    logged = yaml.safe_load((run / "hparams.yaml").read_text())
    assert {"lr", "net", "encoding", "train_file"} <= set(logged)
    assert not [k for k in logged if k.startswith(("_", "data.")) or k == "imdb"], sorted(logged)
    # exactly ten steps warming up for a tenth of them, as torch's schedule could not
    assert run_cli(*common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "10") == 0
