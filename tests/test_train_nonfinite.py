"""Non-finite losses with the real prior, renderer and loss (in-process, world size 1).

A NaN in the input maps makes the loss NaN *and* poisons the VQ codebook EMA during forward; the
skipped step must leave no trace at all (weights, optimizer, scheduler, codebook buffers).
"""

from __future__ import annotations

import pytest
import torch
from test_train_helpers import CONFIG, MICRO, train_dataset  # noqa: F401

from synshot.data import make_loader
from synshot.losses import PriorLoss
from synshot.model import SynShotPrior
from train.checkpoint import CheckpointManager
from train.config import load_train_config
from train.distributed import setup_distributed
from train.engine import build_engine
from train.errors import NonFiniteLossError
from train.loop import LoopSettings, Trainer
from train.preempt import StopRequest
from train.task import PriorTask
from train.tb import TBLogger


@pytest.fixture(scope="module")
def setup(train_dataset):
    env = setup_distributed()
    cfg = load_train_config(CONFIG, [*MICRO, f"data.url={train_dataset}", "logging.val_samples=0"])
    it = iter(make_loader(cfg.data, 0, 1))
    batches = [next(it) for _ in range(3)]
    return env, cfg, batches


def _train(setup, batches, steps, tmp_path, max_nonfinite=3):
    env, cfg, _ = setup
    torch.manual_seed(0)
    model = SynShotPrior(cfg.model)
    engine, _ = build_engine(model, cfg.optim, cfg.distributed, env, cfg.data.batch_size, 10)
    task = PriorTask(PriorLoss(cfg.loss), cfg.render, "cpu", bf16=False)
    trainer = Trainer(engine=engine, task=task, loader=batches, settings=LoopSettings(
        max_steps=steps, max_nonfinite=max_nonfinite, ckpt_every=1000, log_every=1, image_every=1000),
        device="cpu", rank=0, world_size=1, ckpt=CheckpointManager(tmp_path / "ck", 0, 1, 1),
        tb=TBLogger(tmp_path / "tb", enabled=False), stop=StopRequest(signals=()), meta={})
    return trainer, engine


def _poison(batch):
    bad = dict(batch)
    bad["verts"] = batch["verts"].clone()
    bad["verts"][0, :, 3, 3] = float("nan")
    return bad


def test_nan_step_is_skipped_without_trace(setup, tmp_path, monkeypatch):
    _, _, (b0, b1, b2) = setup
    # the trainer writes a checkpoint at max_steps; keep it out of this test
    monkeypatch.setattr(Trainer, "save", lambda self: None)
    clean, e_clean = _train(setup, [b0, b2], 2, tmp_path / "a")
    assert clean.run() == 0
    skipped, e_skip = _train(setup, [b0, _poison(b1), b2], 3, tmp_path / "b")
    assert skipped.run() == 0
    assert skipped.nonfinite_total == 1 and skipped.nonfinite_streak == 0
    a, b = e_clean.module.state_dict(), e_skip.module.state_dict()
    assert any(k.endswith("embed") for k in a), "expected VQ codebook buffers in the state dict"
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert e_clean.get_lr() == e_skip.get_lr()


def test_too_many_nan_steps_abort(setup, tmp_path, monkeypatch):
    _, _, (b0, b1, b2) = setup
    monkeypatch.setattr(Trainer, "save", lambda self: None)
    trainer, _ = _train(setup, [b0, _poison(b1), _poison(b2), b0], 4, tmp_path, max_nonfinite=2)
    with pytest.raises(NonFiniteLossError, match="2 steps in a row"):
        trainer.run()


def test_zero3_trains_and_consolidates(setup, tmp_path, monkeypatch):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    env, cfg, (b0, b1, b2) = setup
    cfg = cfg.model_copy(update={"distributed": cfg.distributed.model_copy(update={"zero_stage": 3})})
    torch.manual_seed(0)
    engine, _ = build_engine(SynShotPrior(cfg.model), cfg.optim, cfg.distributed, env, cfg.data.batch_size, 10)
    task = PriorTask(PriorLoss(cfg.loss), cfg.render, "cpu", bf16=False)
    for b in (b0, b1):
        out = task.training_step(engine, b, False)
        engine.backward(out.loss)
        engine.step()
    ck = CheckpointManager(tmp_path / "ck", 0, 1, 1)
    path = ck.save(engine, 2, {}, {"zero_stage": 3})
    state = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)
    assert set(state) >= {k for k, _ in SynShotPrior(cfg.model).named_parameters()}


def test_validation_metrics_with_lpips(setup, tmp_path):
    """Validator on the held-out split: PSNR/SSIM/loss always, LPIPS when a (here random) backbone is set."""
    from safetensors.torch import save_file

    from synshot.losses.lpips import NETS, _build_features
    from train.validate import Validator

    env, cfg, _ = setup
    torch.manual_seed(1)
    feats = _build_features(NETS["alex"][0])
    backbone = tmp_path / "alexnet_random.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in feats.state_dict().items()}, str(backbone))
    cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"lpips": 0.1, "lpips_backbone": str(backbone)}),
                                 "logging": cfg.logging.model_copy(update={"val_samples": 3})})
    torch.manual_seed(0)
    engine, _ = build_engine(SynShotPrior(cfg.model), cfg.optim, cfg.distributed, env, cfg.data.batch_size, 10)
    task = PriorTask(PriorLoss(cfg.loss), cfg.render, "cpu", bf16=False)
    validator = Validator(cfg, task, 0, 1)
    validator.module = engine
    engine.module.eval()
    with torch.no_grad():
        first = validator(0)
        again = validator(0)
    images = first.pop("images")
    again.pop("images")
    assert set(first) == {"psnr", "ssim", "loss", "lpips"} and all(torch.isfinite(torch.tensor(v)) for v in first.values())
    assert first == again  # fixed samples, fixed order
    assert 0 < first["psnr"] < 60 and -1 <= first["ssim"] <= 1 and first["lpips"] >= 0
    assert images[0].shape == images[1].shape == (2, 3, 32, 32)
