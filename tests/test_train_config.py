"""Training configs: every shipped YAML validates, cross-section checks, DeepSpeed config, masking."""

from pathlib import Path

import pytest

from synshot.config import ConfigError
from train.config import DistributedConfig, arch_hash, config_hash, load_train_config, public_config
from train.engine import deepspeed_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
    cfg = load_train_config(path)
    assert cfg.name == path.stem
    assert cfg.data.uv_size == cfg.model.uv_size


def test_expected_presets():
    names = {p.stem for p in CONFIGS}
    assert {"tiny", "base", "paper", "ablation_no_sampling", "ablation_no_vq", "ablation_single_layer",
            "ablation_f32"} <= names
    d = {p.stem: load_train_config(p) for p in CONFIGS}
    assert d["base"].data.image_size == 512 and d["tiny"].distributed.use_bf16(cuda=False) is False
    assert d["base"].distributed.use_bf16(cuda=True) is True
    assert d["ablation_no_sampling"].model.sampling is False and d["ablation_no_vq"].model.vq is False
    assert d["ablation_single_layer"].model.single_layer is True and d["ablation_f32"].model.feature_channels * 4 == d["tiny"].model.feature_channels
    assert d["paper"].distributed.zero_stage == 2 and d["paper"].model.feature_channels == 128
    assert arch_hash(d["tiny"]) != arch_hash(d["ablation_no_vq"])


def test_cross_section_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.uv_size"):
        load_train_config(None, ["data.url=x", "data.uv_size=32", "model.uv_size=64"])
    with pytest.raises(ConfigError, match="loss.verts_unit"):
        load_train_config(None, ["data.url=x", "loss.verts_unit=0.5"])
    with pytest.raises(ConfigError, match="data: Field required"):
        load_train_config(None, [])
    with pytest.raises(ConfigError, match="min_lr"):
        load_train_config(None, ["data.url=x", "optim.lr=1e-4", "optim.min_lr=1e-3"])
    with pytest.raises(ConfigError, match="zero_stage"):
        load_train_config(None, ["data.url=x", "distributed.zero_stage=4"])


def test_hashes_and_secret_masking():
    a = load_train_config(None, ["data.url=s3://b/ds", "data.storage_options={key: AKIA, secret: s3cr3t, "
                                 "client_kwargs: {endpoint_url: http://x}}"])
    b = load_train_config(None, ["data.url=s3://b/ds", "optim.lr=1e-3"])
    assert arch_hash(a) == arch_hash(b) and config_hash(a) != config_hash(b)
    pub = public_config(a)
    opts = pub["data"]["storage_options"]
    assert opts["key"] == "***" and opts["secret"] == "***" and opts["client_kwargs"]["endpoint_url"] == "http://x"
    assert "s3cr3t" not in str(pub)


def test_deepspeed_config():
    ds = deepspeed_config(DistributedConfig(zero_stage=2, grad_accum=3, grad_clip=0.5), micro_batch=4, world_size=8)
    assert ds["train_batch_size"] == 4 * 3 * 8 and ds["gradient_accumulation_steps"] == 3
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_clipping"] == 0.5
    assert "optimizer" not in ds and "scheduler" not in ds  # client AdamW + LambdaLR: nothing JIT-compiled
    assert ds["bf16"]["enabled"] is False  # bf16 is autocast in the task (docs/decisions.md)


@pytest.mark.parametrize("name", ["tiny", "small", "base", "paper"])
def test_train_config_reads_the_maps_of_its_data_config(name):
    """configs/train/<name>.yaml trains on what configs/data/<name>.yaml renders (UV maps, image size)."""
    from synshot.config import load_config
    from synshot.data.synthesize import SynthConfig
    from train.config import load_train_config

    train_cfg = load_train_config(f"configs/train/{name}.yaml", [])
    data_cfg = load_config(SynthConfig, f"configs/data/{name}.yaml")
    assert train_cfg.data.uv_size == data_cfg.uv_size == train_cfg.model.uv_size
    assert train_cfg.data.image_size <= data_cfg.image_size
