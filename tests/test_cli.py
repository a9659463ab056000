"""The shared command grammar (synshot.cli): overrides anywhere, --config/--out, error format, exit codes."""

from __future__ import annotations

import pytest

from synshot.cli import (
    EXIT_CHECKPOINT, EXIT_USAGE, CheckpointFileError, Command, main as synshot_main, split_overrides,
)
from synshot.config import ConfigBase


class _Cfg(ConfigBase):
    steps: int = 3
    lr: float = 0.1


def _command() -> Command:
    cmd = Command("toy", "a toy command", config_cls=_Cfg, default_config=None, out_help="output folder")
    cmd.parser.add_argument("subject")
    cmd.parser.add_argument("--flag", action="store_true")
    return cmd


def test_overrides_anywhere_on_the_line():
    seen = {}

    def run(args, cfg):
        seen.update(subject=args.subject, out=args.out, flag=args.flag, cfg=cfg)

    rc = _command().main(["steps=7", "subj", "--out", "o", "lr=0.5", "--flag"], run)
    assert rc == 0
    assert seen == {"subject": "subj", "out": "o", "flag": True, "cfg": _Cfg(steps=7, lr=0.5)}


def test_split_overrides_keeps_options_with_equals_and_words_after_dashdash():
    rest, ov = split_overrides(["--out=x=y", "a.b=1", "--", "c=2"])
    assert rest == ["--out=x=y", "c=2"] and ov == ["a.b=1"]


def test_unknown_key_exits_2_without_traceback(capsys):
    rc = _command().main(["subj", "nope=1"], lambda a, c: 0)
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "error:" in err and "nope" in err and "Traceback" not in err


def test_missing_config_file_exits_2(capsys, tmp_path):
    rc = _command().main(["subj", "--config", str(tmp_path / "missing.yaml")], lambda a, c: 0)
    assert rc == EXIT_USAGE and "config file not found" in capsys.readouterr().err


def test_user_error_maps_to_its_family_code(capsys):
    def run(args, cfg):
        raise CheckpointFileError("prior.safetensors: truncated; re-export it with `synshot export`")

    assert _command().main(["subj"], run) == EXIT_CHECKPOINT
    err = capsys.readouterr().err
    assert err.startswith("error: prior.safetensors: truncated") and "Traceback" not in err


def test_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        _command().main(["subj"], lambda a, c: 1 / 0)


def test_argparse_errors_use_the_common_format(capsys):
    assert _command().main(["subj", "--bogus"], lambda a, c: 0) == EXIT_USAGE
    assert "error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_console_script_lists_commands_and_rejects_unknown(capsys):
    assert synshot_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "invert" in out and "data synth" in out
    assert synshot_main(["frobnicate"]) == EXIT_USAGE
    assert "unknown command" in capsys.readouterr().err
