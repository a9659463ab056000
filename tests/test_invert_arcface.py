"""ArcFace path: a generated ArcFace-shaped ONNX fixture through insightface and onnx2torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from synshot.invert import arcface as arc


class TinyArcFace(nn.Module):
    """ArcFace-shaped: 112x112 RGB -> 4 stride-2 conv/BN/PReLU stages (56/28/14/7) -> BN -> FC -> BN1d 512."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for cout in (8, 16, 16, 32):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.PReLU(cout)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512)

    def forward(self, x):
        return self.features(self.fc(torch.flatten(self.bn(self.body(x)), 1)))


def make_arcface_onnx(path, seed: int = 0):
    """Export a tiny net with randomised BN/PReLU params (equal tensors would be de-duplicated by the exporter)."""
    gen = torch.Generator().manual_seed(seed)
    net = TinyArcFace()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1 + 0.1 * torch.rand(m.running_var.shape, generator=gen))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(0.25 + 0.05 * torch.randn(m.weight.shape, generator=gen))
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 112, 112), str(path), dynamo=False, opset_version=17,
                          input_names=["input.1"], output_names=["fc1"],
                          dynamic_axes={"input.1": {0: "N"}, "fc1": {0: "N"}})
    return path


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return make_arcface_onnx(tmp_path_factory.mktemp("arc") / "arcface_tiny.onnx")


def test_insightface_loads_fixture_as_arcface(onnx_path):
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    model = get_model(str(onnx_path), providers=["CPUExecutionProvider"])
    assert isinstance(model, ArcFaceONNX)
    model.prepare(ctx_id=-1)
    assert model.get_feat(np.zeros((112, 112, 3), np.uint8)).shape == (1, 512)


def test_onnx2torch_parity_and_input_gradient(onnx_path):
    from insightface.model_zoo import get_model

    net = arc.ArcFace(onnx_path)
    rng = np.random.default_rng(0)
    rgb_u8 = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    ref = get_model(str(onnx_path), providers=["CPUExecutionProvider"])
    ref.prepare(ctx_id=-1)
    expected = ref.get_feat([img[..., ::-1].copy() for img in rgb_u8])  # insightface takes BGR
    x = torch.from_numpy(rgb_u8).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
    emb, feats = net(x)
    np.testing.assert_allclose(emb.detach().numpy(), expected, atol=1e-4, rtol=1e-4)
    assert [f.shape[-1] for f in feats] == [56, 28, 14, 7]
    emb.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in net.parameters())


def test_identity_loss_decreases_when_optimising_the_image(onnx_path):
    torch.manual_seed(0)
    loss_fn = arc.IdentityLoss(arc.ArcFace(onnx_path))
    target = torch.rand(1, 3, 112, 112)
    loss_fn.set_target(target)
    x = torch.rand(1, 3, 112, 112).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.03)
    first = None
    for _ in range(20):
        terms = loss_fn(x)
        loss = terms["id"] + terms["arc_feat"]
        first = float(terms["id"].detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss_fn(x)["id"]) < 0.5 * first


def test_crop_resize_is_differentiable_and_places_box():
    img = torch.zeros(1, 3, 40, 60)
    img[:, :, 10:20, 30:40] = 1.0
    img.requires_grad_(True)
    crop = arc.crop_resize(img, torch.tensor([[30.0, 10.0, 40.0, 20.0]]), size=8, background=0.0)
    assert torch.allclose(crop, torch.ones_like(crop), atol=1e-5)
    crop.sum().backward()
    assert img.grad[:, :, 10:20, 30:40].sum() > 0
    box = arc.square_boxes([torch.tensor([[0.0, 0.0], [10.0, 4.0]])], margin=0.0)[0]
    assert torch.allclose(box, torch.tensor([0.0, -3.0, 10.0, 7.0]))


def test_missing_model_warns_once_and_bad_path_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(arc, "_warned", False)
    with pytest.warns(UserWarning, match="arcface_model is not set"):
        assert arc.load_arcface(None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert arc.load_arcface(None) is None  # second call: silent
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        arc.load_arcface(str(tmp_path / "nope.onnx"))
