"""The shared command grammar (synshot.cli): overrides anywhere, --config/--out, error format, exit codes."""

from __future__ import annotations

from pathlib import Path

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


# Every subcommand: its positional words, a key its --config file sets and a key=value override.
SUBCOMMANDS = {
    "data synth": ([], "num_identities", 3, "seed", 5),
    "data inspect": (["data/none"], "sheet_samples", 2, "verify_hash", True),
    "data subject": ([], "size", 32, "seed", 3001),
    "data scaling": (["runs/a"], "plot", "p.png", "baseline", "m.json"),
    "data length": (["runs/a"], "plot", "p.png", "baseline", "runs/a/eval_noprior"),
    "head sheet": ([], "identities", 2, "spp", 4),
    "head landmarks": ([], "identities", 2, "calibrate", True),
    "track correction": ([], "identities", 40, "detect.work_side", 256),
    "track predictor": ([], "trees", 50, "detect.work_side", 256),
    "track": (["photos/"], "image_side", 512, "seed", 3),
    "train": ([], "max_steps", 7, "seed", 3),
    "submit": ([], "max_steps", 7, "seed", 3),
    "export": ([], "run", "runs/a", "run", "runs/b"),
    "prior check": (["a.safetensors"], "export", "b.safetensors", "export", "c.safetensors"),
    "invert": (["subjects/s1"], "seed", 4, "stage1.steps", 9),
    "drive": ([], "device", "cpu", "expr", "seq.json"),
    "view": (["avatar.safetensors"], "port", 8090, "expr", ["seq.json"]),
    "eval track": (["subjects/s3001"], "image_side", 512, "seed", 3),
    "eval tune": ([], "trials", 3, "seed", 1),
    "eval": ([], "grid_frames", 2, "reuse", False),
    "bench": ([], "quick", True, "only", ["model"]),
    "plan": ([], "nodes", 2, "gpus_per_node", 4),
    "demo": ([], "nproc", 1, "subject_seeds", [3001, 3002]),
}


def _cli_of(name: str) -> Command:
    import importlib

    from synshot.cli import COMMANDS

    module = importlib.import_module(COMMANDS[name][0].split(":")[0])
    assert isinstance(module.CLI, Command) and module.CLI.name == name
    return module.CLI


def test_every_subcommand_is_covered():
    from synshot.cli import COMMANDS

    assert set(COMMANDS) == set(SUBCOMMANDS)


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_subcommand_takes_config_overrides_and_out(name, tmp_path, capsys):
    import yaml

    positional, file_key, file_value, key, value = SUBCOMMANDS[name]
    cli = _cli_of(name)
    default = cli.parser.get_default("config")
    cfg_file = tmp_path / "c.yaml"
    doc = {"inherit": str(Path(default).resolve())} if default else {}
    cfg_file.write_text(yaml.safe_dump({**doc, file_key: file_value}))
    # overrides before, between and after the options
    args, cfg = cli.parse([f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}",
                           *positional, "--config", str(cfg_file), "--out", str(tmp_path / "o")])
    dump = cfg.model_dump()

    def get(d, dotted):
        for part in dotted.split("."):
            d = d[part]
        return d

    if key != file_key:
        assert get(dump, file_key) == file_value
    assert get(dump, key) == value
    out = get(dump, cli.out_key) if cli.out_key else args.out
    assert out == str(tmp_path / "o")
    assert cli.main(["--help"], lambda a, c: 0) == 0
    help_text = capsys.readouterr().out
    assert "--config" in help_text and "--out" in help_text and "key=value" in help_text


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_subcommand_rejects_unknown_key_with_exit_2(name, capsys):
    from synshot.cli import main as synshot_main

    positional = SUBCOMMANDS[name][0]
    rc = synshot_main([*name.split(), *positional, "no_such_key=1"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE, err
    assert "error:" in err and "no_such_key: unknown key" in err and "Traceback" not in err


def test_a_command_whose_program_folder_is_missing_says_so(monkeypatch, capsys):
    """train/, data_tools/, slurm/ are not installed: outside a checkout the command names the fix."""
    from synshot import cli

    monkeypatch.setitem(cli.COMMANDS, "ghost", ("no_such_program_folder.run:main", "x"))
    assert cli.main(["ghost"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "runs from a SynShot source checkout" in err and "Traceback" not in err
