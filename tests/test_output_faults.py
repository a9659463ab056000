"""Every command turns an unwritable/invalid output path (and synth's config clash) into one
`error:` line with its family's exit code, never a traceback."""

from __future__ import annotations

import pytest
from test_data_helpers import write_dataset

from synshot import fsio
from synshot.cli import EXIT_DATA, EXIT_USAGE

pytestmark = pytest.mark.faults


@pytest.fixture
def blocked(tmp_path):
    """A path whose parent is a regular file: no process (root included) can create it."""
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "out"


def _no_traceback(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err, err
    return err


def test_synth_into_an_unwritable_folder(blocked, capsys):
    from data_tools.synth import main

    assert main(["--config", "configs/data/tiny.yaml", "--out", str(blocked), "--no-progress"]) == EXIT_USAGE
    assert str(blocked.parent) in _no_traceback(capsys)


def test_synth_rerun_with_another_config_into_the_same_folder(tmp_path, capsys):
    from data_tools.synth import main

    write_dataset(str(tmp_path), shards=1, per_shard=2)  # shards of another generator config
    assert main(["--config", "configs/data/tiny.yaml", "--out", str(tmp_path), "--no-progress"]) == EXIT_DATA
    assert "written with another generator config" in _no_traceback(capsys)


def test_subject_into_an_unwritable_folder(blocked, capsys):
    from data_tools.subject import main

    assert main(["--seed", "1", "--out", str(blocked), "--size", "16", "--spp", "1", "--tiny-head",
                 "--eval-views", "0"]) == EXIT_USAGE
    assert "not a folder" in _no_traceback(capsys)


def test_regenerated_subject_drops_stale_eval_frames(tmp_path):
    from data_tools.subject import make_subject

    out = tmp_path / "s1"
    make_subject(1, out, size=16, spp=1, eval_views=2, eval_expressions=1, tiny_head=True)
    assert len(list((out / "eval" / "images").iterdir())) == 2
    make_subject(1, out, size=16, spp=1, eval_views=1, eval_expressions=1, tiny_head=True)
    assert [p.name for p in (out / "eval" / "images").iterdir()] == ["e0_v0.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1"]


def test_inspect_sheet_into_an_unwritable_folder(tmp_path, blocked, capsys):
    from data_tools.inspect import main

    root = tmp_path / "ds"
    write_dataset(str(root), shards=1, per_shard=2)
    assert main([str(root), "--out", str(blocked / "sheet.png")]) == EXIT_USAGE
    _no_traceback(capsys)


def test_export_into_an_unwritable_folder(blocked):
    from synshot.config import load_config
    from synshot.model import ModelConfig, SynShotPrior, save_exported
    from tiny_fixtures import TINY_PRIOR

    mcfg = load_config(ModelConfig, None, TINY_PRIOR)
    with pytest.raises(fsio.OutputPathError, match="file/out: cannot create the output folder"):
        save_exported(SynShotPrior(mcfg), mcfg, blocked / "prior.safetensors")


def test_train_into_an_unwritable_folder(blocked, tmp_path, capsys):
    from train.run import main

    rc = main(["--config", "configs/train/tiny.yaml", f"out_dir={blocked}", f"data.url={tmp_path / 'nodata'}"])
    assert rc == EXIT_USAGE
    assert "file/out/tiny: cannot create the output folder" in _no_traceback(capsys)
