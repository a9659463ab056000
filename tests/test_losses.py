"""Losses: SSIM/PSNR known values, PriorLoss terms, and the vendored LPIPS against the lpips package."""

import math
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

from synshot.losses import LPIPS, LossConfig, LPIPSError, PriorLoss, psnr, ssim
from synshot.losses.lpips import default_heads_path


def _imgs(seed=0, shape=(2, 3, 32, 32)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def test_ssim_identical_is_one_and_differs_otherwise():
    x, y = _imgs()
    assert torch.isclose(ssim(x, x), torch.tensor(1.0), atol=1e-6)
    assert ssim(x, y) < 0.2
    assert ssim(x, (x + 0.02 * y).clamp(0, 1)) > 0.9
    per = ssim(x, y, reduce=False)
    assert per.shape == (2,)


def test_ssim_of_constant_images_matches_formula():
    # constant images: sigma terms vanish, SSIM = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    a, b, c1 = 0.2, 0.6, 0.01**2
    x, y = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    assert torch.isclose(ssim(x, y), torch.tensor((2 * a * b + c1) / (a * a + b * b + c1)), atol=1e-4)


def test_ssim_is_differentiable():
    x, y = _imgs()
    x.requires_grad_(True)
    (1 - ssim(x, y)).backward()
    assert x.grad.abs().sum() > 0


def test_psnr_known_value():
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full((1, 3, 8, 8), 0.1)  # MSE 0.01 -> 20 dB
    assert torch.isclose(psnr(x, y), torch.tensor(20.0), atol=1e-4)
    assert psnr(torch.zeros(2, 1, 3, 4, 4), torch.full((2, 1, 3, 4, 4), 0.5), reduce=False).shape == (2, 1)


def _fake_output(b=1, s=8, n=10, vq=0.5):
    dec = SimpleNamespace(tex=torch.full((b, 3, s, s), 0.5), verts=torch.zeros(b, 3, s, s), exp=torch.zeros(b, 3, s, s))
    g = SimpleNamespace(delta_position=torch.full((b, n, 3), 0.5), delta_log_scale=torch.full((b, n, 3), 2.0))
    return SimpleNamespace(decoded=dec, gaussians=g, quantized=SimpleNamespace(loss=torch.tensor(vq)))


def _batch(b=1, v=2, h=16, w=16, s=8):
    verts = torch.zeros(b, 3, s, s)
    verts[:, :, :4] = 0.05  # atlas = top half
    return {"rgb": torch.full((b, v, 3, h, w), 0.25), "mask": torch.ones(b, v, 1, h, w),
            "tex": torch.full((b, 3, s, s), 0.75), "verts": verts, "exp": torch.zeros(b, 3, s, s)}


def test_prior_loss_terms_known_values():
    cfg = LossConfig(lpips=0.0)
    loss = PriorLoss(cfg)
    batch = _batch()
    pred = torch.full_like(batch["rgb"], 0.75)
    total, terms = loss(_fake_output(), pred, batch)
    assert set(terms) == set(PriorLoss.TERMS)
    assert torch.isclose(terms["l1"], torch.tensor(0.5))
    # geom: tex |0.5-0.75| in atlas, verts |0-0.05|/0.1 in atlas (only the atlas counts)
    assert torch.isclose(terms["geom"], torch.tensor(0.25 + 0.5), atol=1e-6)
    assert torch.isclose(terms["reg"], torch.tensor(cfg.reg_position * 0.25 + cfg.reg_scale * 4.0))
    expect = cfg.l1 * 0.5 + cfg.ssim * terms["ssim"] + cfg.geom * 0.75 + terms["reg"] + cfg.vq * 0.5
    assert torch.isclose(total, expect)


def test_prior_loss_composites_target_over_background():
    loss = PriorLoss(LossConfig(lpips=0.0, background=[1.0, 1.0, 1.0]))
    batch = _batch()
    batch["mask"][..., :8, :] = 0  # top half is background
    target = loss.composite_target(batch)
    assert torch.all(target[..., :8, :] == 1.0) and torch.all(target[..., 8:, :] == 0.25)
    _, terms = loss(_fake_output(), target.clone(), batch)
    assert terms["l1"] == 0 and torch.isclose(terms["ssim"], torch.tensor(0.0), atol=1e-6)
    with pytest.raises(ValueError, match="rendered_rgb"):
        loss(_fake_output(), target[..., :8], batch)


def test_lpips_off_without_backbone_warns_exactly_once(monkeypatch):
    import synshot.losses.prior_loss as pl

    monkeypatch.setattr(pl, "_WARNED", set())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        loss = PriorLoss(LossConfig(lpips=0.1))
        PriorLoss(LossConfig(lpips=0.1))  # a second loss object (e.g. validation) does not warn again
        batch = _batch()
        for _ in range(3):
            _, terms = loss(_fake_output(), torch.rand_like(batch["rgb"]), batch)
    msgs = [str(w.message) for w in rec if "LPIPS" in str(w.message)]
    assert len(msgs) == 1 and "OFF" in msgs[0]
    assert not loss.lpips_enabled and terms["lpips"] == 0


# --- LPIPS: real loading path with a generated torchvision-layout backbone ------------------------


def _import_lpips_package():
    """Import the reference lpips package; its torchvision needs the nms schema shim on this stack."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        for name in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_lpips_package.lib = lib  # keep the registration alive
    except ImportError:
        pytest.skip("torchvision not installed: cannot build the reference lpips package")
    import lpips

    return lpips


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_vendored_lpips_matches_lpips_package(tmp_path, net):
    lpips = _import_lpips_package()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    g = torch.Generator().manual_seed(1)
    state = {}
    for sl in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for idx, mod in sl.named_children():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.data = torch.randn(mod.weight.shape, generator=g) * math.sqrt(2.0 / mod.weight[0].numel())
                mod.bias.data = torch.randn(mod.bias.shape, generator=g) * 0.01
                state[f"features.{idx}.weight"] = mod.weight.data.clone()
                state[f"features.{idx}.bias"] = mod.bias.data.clone()
    state["classifier.1.weight"] = torch.zeros(4, 4)  # torchvision files also hold the classifier
    path = tmp_path / f"{net}_backbone.pth"
    torch.save(state, path)

    mine = LPIPS(path, net)
    x, y = _imgs(3, (2, 3, 64, 64))
    expect = ref(x, y, normalize=True).flatten()
    got = mine(x, y)
    assert torch.allclose(got, expect, rtol=1e-4, atol=1e-6), (got, expect)
    assert torch.allclose(mine(x, x), torch.zeros(2), atol=1e-7)

    # through PriorLoss, with gradients reaching the rendered image
    loss = PriorLoss(LossConfig(lpips=1.0, lpips_backbone=str(path), lpips_net=net))
    assert loss.lpips_enabled
    batch = _batch(h=64, w=64)
    pred = torch.rand_like(batch["rgb"]).requires_grad_(True)
    _, terms = loss(_fake_output(), pred, batch)
    assert terms["lpips"] > 0
    terms["lpips"].backward()
    assert pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_lpips_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(LPIPSError, match="nope.pth"):
        LPIPS(missing, "alex")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(LPIPSError, match="junk.pth"):
        LPIPS(junk, "alex")
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(LPIPSError, match="wrong.pth"):
        LPIPS(wrong, "alex")


def test_lpips_heads_come_from_the_installed_wheel():
    path = default_heads_path("alex")
    assert path is not None and path.name == "alex.pth" and path.parent.name == "v0.1"
    assert "lin0.model.1.weight" in torch.load(path, map_location="cpu", weights_only=True)
