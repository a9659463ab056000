"""Config machinery: strict keys, typed values, inheritance, overrides, clear errors."""

import pytest
from pydantic import Field

from synshot.config import ConfigBase, ConfigError, apply_overrides, load_config


class Inner(ConfigBase):
    channels: int = Field(128, gt=0)
    name: str = "face"


class Outer(ConfigBase):
    lr: float = 1e-3
    inner: Inner = Inner()


def test_defaults_and_override(tmp_path):
    cfg = load_config(Outer, None, ["inner.channels=32", "lr=1e-4"])
    assert cfg.inner.channels == 32 and cfg.lr == pytest.approx(1e-4)


def test_inherit_and_merge(tmp_path):
    (tmp_path / "base.yaml").write_text("lr: 0.5\ninner: {channels: 64, name: scalp}\n")
    (tmp_path / "child.yaml").write_text("inherit: base.yaml\ninner: {channels: 16}\n")
    cfg = load_config(Outer, tmp_path / "child.yaml")
    assert (cfg.lr, cfg.inner.channels, cfg.inner.name) == (0.5, 16, "scalp")


def test_a_section_inherits_a_component_file(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "inner.yaml").write_text("channels: 64\nname: scalp\n")
    (tmp_path / "run.yaml").write_text("lr: 0.5\ninner: {inherit: parts/inner.yaml, channels: 16}\n")
    cfg = load_config(Outer, tmp_path / "run.yaml")
    assert (cfg.lr, cfg.inner.channels, cfg.inner.name) == (0.5, 16, "scalp")
    (tmp_path / "loop.yaml").write_text("inner: {inherit: loop.yaml}\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(Outer, tmp_path / "loop.yaml")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("inner.chanels=3", "inner.chanels: unknown key"),
        ("inner.channels=abc", "inner.channels"),
        ("inner.channels=-1", "greater than 0"),
        ("lr", "expected key=value"),
    ],
)
def test_errors_name_the_key(override, expected):
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, None, [override])
    assert expected in str(exc.value)


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Outer, bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("inherit: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(Outer, loop)


def test_apply_overrides_rejects_descending_into_value():
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides({"lr": 1.0}, ["lr.x=2"])
