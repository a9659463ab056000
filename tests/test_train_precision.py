"""Memory and precision switches of the GPU configs, checked on CPU with the real prior, renderer and loss:
activation checkpointing of the decoders gives the same loss and gradients; bf16 autocast of the prior's
forward (the renderer and the loss stay fp32) gives the same loss within bf16 tolerance."""

from __future__ import annotations

import pytest
import torch
from test_train_helpers import CONFIG, MICRO, train_dataset  # noqa: F401

from synshot.data import make_loader
from synshot.losses import PriorLoss
from synshot.model import SynShotPrior
from train.config import load_train_config
from train.engine import set_activation_checkpointing
from train.task import PriorTask


@pytest.fixture(scope="module")
def setup(train_dataset):
    cfg = load_train_config(CONFIG, [*MICRO, f"data.url={train_dataset}", "logging.val_samples=0"])
    batch = next(iter(make_loader(cfg.data, 0, 1)))
    return cfg, batch


def _step(cfg, batch, bf16=False, ckpt=False):
    torch.manual_seed(0)
    model = SynShotPrior(cfg.model).train()
    assert set_activation_checkpointing(model, ckpt) >= 3  # D_id, D_expr, D_feat
    out = PriorTask(PriorLoss(cfg.loss), cfg.render, "cpu", bf16=bf16).training_step(model, batch, False)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(out.loss.detach()), grads


def test_activation_checkpointing_same_loss_and_gradients(setup):
    cfg, batch = setup
    loss, grads = _step(cfg, batch)
    loss_ck, grads_ck = _step(cfg, batch, ckpt=True)
    assert loss_ck == loss
    assert grads.keys() == grads_ck.keys() and len(grads) > 10
    for k in grads:
        torch.testing.assert_close(grads_ck[k], grads[k], rtol=1e-5, atol=1e-7, msg=k)


def test_bf16_autocast_loss_within_tolerance(setup):
    cfg, batch = setup
    loss, grads = _step(cfg, batch)
    loss_bf, grads_bf = _step(cfg, batch, bf16=True)
    assert loss_bf == pytest.approx(loss, rel=2e-2)  # bf16 has 8 mantissa bits; the loss is fp32
    assert all(torch.isfinite(g).all() for g in grads_bf.values())
    total = sum(float(g.norm()) for g in grads.values())
    total_bf = sum(float(g.norm()) for g in grads_bf.values())
    assert total_bf == pytest.approx(total, rel=0.1)
