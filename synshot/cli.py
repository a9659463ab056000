"""One command-line grammar for every SynShot tool.

Every command reads::

    synshot <command> [POSITIONAL ...] [--config YAML] [--out PATH] [--OPTION ...] [key=value ...]

- ``--config``: the command's YAML (``inherit:`` composes files); each command has a default.
- ``key=value``: dotted overrides of that config, anywhere on the line (before, between or after options).
- ``--out``: where the command writes (a file or folder; the command's help says which).
- ``--OPTION``: a command's own switches; many are shortcuts for one config key (``--seed 7`` is
  ``seed=7``, declared with :meth:`Command.option`), so the config stays the one place a setting lives.
- ``-v`` / ``-q``: more or less logging.

Errors a user can fix (bad input, missing file, bad config) print one line ``error: ...`` naming
the file and the fix, with no traceback, and exit with the code of their family (:data:`EXIT_CODES`).
A bug still shows its traceback (exit 1). The same codes are used by ``python -m ...``, the make
targets and the SLURM scripts, which branch on them.

Usage in a command module::

    CLI = Command("invert", "Invert the prior on 1-3 images of one subject.",
                  config_cls="synshot.invert.config:InvertConfig",  # a class, or "module:Class" (lazy import)
                  default_config="configs/invert/tiny.yaml",
                  out_help="output folder (default <run>/invert/<subject>)")
    CLI.parser.add_argument("subject", help="subject folder")   # a plain argument
    CLI.option("--prior", key="ckpt", help="exported prior")    # a shortcut for ckpt=FILE

    def run(args, cfg) -> int | None: ...

    def main(argv=None) -> int:
        return CLI.main(argv, run)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from synshot.config import ConfigError, load_config

EXIT_OK = 0
EXIT_BUG = 1  # unexpected exception: traceback printed
EXIT_USAGE = 2  # bad command line, config or input file (the message names it)
EXIT_CHECKPOINT = 3  # checkpoint / exported prior / avatar missing, damaged or incompatible
EXIT_NONFINITE = 4  # non-finite numbers where finite ones are required (loss, weights, outputs)
EXIT_DATA = 5  # dataset missing, inconsistent with the config, or too corrupt
EXIT_PREEMPTED = 75  # checkpoint written on SIGUSR1/SIGTERM: requeue to resume (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_BUG: "crash (a bug: traceback printed)",
    EXIT_USAGE: "bad command line, config or input",
    EXIT_CHECKPOINT: "bad checkpoint, prior or avatar file",
    EXIT_NONFINITE: "non-finite numbers",
    EXIT_DATA: "bad or missing data",
    EXIT_PREEMPTED: "checkpointed on a signal; requeue to resume",
    EXIT_INTERRUPTED: "interrupted",
}


class SynshotError(Exception):
    """A problem the user can fix. The message names the file and the fix; no traceback is shown.

    Each stage subclasses it (or one of the families below) so that its errors map to one exit code.
    """

    exit_code = EXIT_USAGE


class UsageError(SynshotError):
    """Bad command line or input file."""

    exit_code = EXIT_USAGE


class CheckpointFileError(SynshotError):
    """A checkpoint, exported prior or avatar that cannot be used."""

    exit_code = EXIT_CHECKPOINT


class NonFiniteError(SynshotError):
    """NaN/inf where finite numbers are required."""

    exit_code = EXIT_NONFINITE


class DataFileError(SynshotError):
    """A dataset that is missing, inconsistent or too corrupt."""

    exit_code = EXIT_DATA


# a command-line word that is an override: dotted key, '=', value (``--opt=value`` is an option, not this)
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*=")


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` words from the rest, wherever they stand on the line."""
    rest: list[str] = []
    overrides: list[str] = []
    after_dashdash = False
    for word in argv:
        if word == "--" and not after_dashdash:
            after_dashdash = True
            continue
        if not after_dashdash and _OVERRIDE.match(word):
            overrides.append(word)
        else:
            rest.append(word)
    return rest, overrides


def exit_code_epilog() -> str:
    return "exit codes: " + ", ".join(f"{code} {text}" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in the common format (``error: ...``, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


class Command:
    """A command: its parser (``--config``, ``--out``, ``-v/-q``, overrides) and its error handling."""

    def __init__(
        self,
        name: str,
        description: str,
        *,
        config_cls: type | str | None = None,
        default_config: str | None = None,
        out_help: str | None = "where to write",
        out_key: str | None = None,
        example: str | None = None,
    ) -> None:
        self.name = name
        self.config_cls = config_cls
        self.out_key = out_key
        self._option_keys: dict[str, str] = {}  # argparse dest -> config key it sets
        epilog = "\n".join(x for x in (f"example: {example}" if example else None, exit_code_epilog()) if x)
        self.parser = _Parser(
            prog=f"synshot {name}",
            description=description + "\n\nkey=value words anywhere on the line override the config "
                                      "(dotted keys: section.key=value); an option with '(config key K)' "
                                      "is the same as K=value.",
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.parser.add_argument(
            "--config", default=default_config, metavar="YAML",
            help=f"YAML config (default: {default_config or 'built-in defaults'})")
        if out_help is not None:
            if out_key is not None:
                self.option("--out", key=out_key, metavar="PATH", help=out_help)
            else:
                self.parser.add_argument("--out", metavar="PATH", help=out_help)
        self.parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
        self.parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    def option(self, *flags: str, key: str, help: str | None = None, **kwargs: Any) -> None:
        """An option that is a shortcut for the config key ``key`` (``--size 64`` is ``size=64``).

        The config stays the one place a setting lives: the option only becomes an override (applied
        before the line's ``key=value`` words), so ``args`` never holds a second copy of the value.
        """
        dest = f"cfg{len(self._option_keys)}__" + key.replace(".", "__")  # unique: two spellings of one key
        shown = help if help == argparse.SUPPRESS else f"{help + ' ' if help else ''}(config key {key})"
        if kwargs.get("action") in (None, "append", "store"):
            kwargs.setdefault("metavar", key.rsplit(".", 1)[-1].upper())
        if flags and not flags[0].startswith("-"):  # an optional positional word: ``synshot export RUN``
            kwargs.setdefault("nargs", "?")
            self.parser.add_argument(dest, default=None, help=shown, **kwargs)
        else:
            self.parser.add_argument(*flags, dest=dest, default=None, help=shown, **kwargs)
        self._option_keys[dest] = key

    def parse(self, argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Any]:
        """Parse the line; returns ``(args, cfg)`` with ``args.overrides`` set. Raises ConfigError."""
        words = list(sys.argv[1:] if argv is None else argv)
        rest, overrides = split_overrides(words)
        args = self.parser.parse_args(rest)
        from_options = [f"{key}={json.dumps(getattr(args, dest))}" for dest, key in self._option_keys.items()
                        if getattr(args, dest) is not None]
        for dest in self._option_keys:
            delattr(args, dest)
        overrides = from_options + overrides
        args.overrides = overrides
        if self.config_cls is None:
            if overrides:
                raise ConfigError(f"{self.parser.prog} takes no config overrides (got {' '.join(overrides)})")
            return args, None
        config = args.config
        if config is not None and not Path(config).is_file():
            raise ConfigError(f"{config}: config file not found (check --config)")
        return args, load_config(self.resolve_config_cls(), config, overrides)

    def resolve_config_cls(self) -> type:
        """The config class; ``"module:Class"`` defers a heavy import until the line is parsed."""
        if isinstance(self.config_cls, str):
            import importlib

            module, _, attr = self.config_cls.partition(":")
            self.config_cls = getattr(importlib.import_module(module), attr)
        return self.config_cls

    def main(self, argv: Sequence[str] | None, run: Callable[[argparse.Namespace, Any], int | None]) -> int:
        """Parse, set up logging, run; map user errors to exit codes (see :data:`EXIT_CODES`)."""
        try:
            args, cfg = self.parse(argv)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except SystemExit as exc:  # --help (0) or an argparse error (2)
            return int(exc.code or 0)
        setup_logging(verbose=args.verbose, quiet=args.quiet)
        return run_guarded(lambda: run(args, cfg))


def run_guarded(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; user errors become one ``error:`` line and their family's exit code."""
    try:
        rc = fn()
    except SynshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if rc is None else int(rc)


def process_rank() -> int:
    """This process's global rank under torchrun / srun (0 when not distributed)."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


class _StageFormatter(logging.Formatter):
    """``[train] ...``, ``[invert] ...``: the stage (first name under ``synshot``), not the module path."""

    def format(self, record: logging.LogRecord) -> str:
        parts = record.name.split(".")
        record.stage = parts[1] if parts[0] == "synshot" and len(parts) > 1 else parts[0]
        return super().format(record)


def setup_logging(verbose: int = 0, quiet: bool = False, rank: int | None = None) -> None:
    """Log to stderr as ``[stage] message``; ranks other than 0 log warnings only (rank prefixed)."""
    rank = process_rank() if rank is None else rank
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    if rank != 0 and verbose < 2:
        level = max(level, logging.WARNING)
    prefix = f"[rank {rank}] " if rank != 0 else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StageFormatter(prefix + "[%(stage)s] %(message)s"))
    root = logging.getLogger("synshot")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``synshot`` tree (``synshot.invert``, ``synshot.train`` ...)."""
    return logging.getLogger(name if name == "synshot" or name.startswith("synshot.") else f"synshot.{name}")


# The console script ``synshot``: subcommands in pipeline order -> "module:function" taking argv.
# A subcommand with a space ("data synth") is typed as two words.
COMMANDS: dict[str, tuple[str, str]] = {
    "data synth": ("data_tools.synth:main", "render the synthetic dataset into shards"),
    "data inspect": ("data_tools.inspect:main", "validate a dataset and draw a contact sheet"),
    "data subject": ("data_tools.subject:main", "render a held-out synthetic subject folder"),
    "data scaling": ("data_tools.identity_scaling:main", "identity-scaling study: table + plot from runs"),
    "data length": ("data_tools.training_length:main", "training-length study: table + plot from a run's checkpoints"),
    "head sheet": ("synshot.head.contact_sheet:main", "ray-traced sheet of sampled identities x expressions"),
    "head landmarks": ("synshot.head.landmarks:main", "calibrate / draw the 68 landmarks on the head model"),
    "track correction": ("data_tools.landmark_correction:main", "learn the tracker's correction of dlib's landmarks"),
    "track predictor": ("data_tools.landmark_predictor:main", "train the tracker's landmark predictor on renders"),
    "track": ("data_tools.track:main", "fit the head model to 1-3 photos -> a subject folder"),
    "train": ("train.run:main", "train the prior (one process, torchrun or srun)"),
    "submit": ("slurm.submit:main", "submit training to SLURM through submitit"),
    "export": ("train.export:main", "export a run's checkpoint as one safetensors prior"),
    "prior check": ("synshot.priors.__main__:main", "compare an export's weights with the shipped prior's"),
    "invert": ("synshot.invert.__main__:main", "invert the prior on 1-3 images of a subject"),
    "drive": ("synshot.invert.drive:main", "drive an avatar with expressions"),
    "view": ("synshot.view.__main__:main", "look at and drive an avatar in the browser"),
    "eval track": ("synshot.eval.tracked:main", "track held-out subjects from their input images (cached)"),
    "eval tune": ("synshot.eval.tune:main", "equal-budget hyper-parameter search on validation subjects"),
    "eval": ("synshot.eval.__main__:main", "evaluate methods on held-out subjects"),
    "bench": ("synshot.bench.__main__:main", "benchmarks -> JSON + table"),
    "plan": ("synshot.plan:main", "capacity plan from bench figures and accelerator assumptions"),
    "demo": ("synshot.demo:main", "the whole pipeline at demo scale"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: synshot <command> [POSITIONAL ...] [--config YAML] [--out PATH] [--OPTION ...] [key=value ...]",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "synshot <command> --help shows a command's options.", exit_code_epilog()]
    return "\n".join(lines)


def _ensure_source_tree_importable() -> None:
    """``train``/``data_tools``/``slurm`` live beside ``synshot`` in the source tree, not in site-packages:
    the checkout ``synshot`` was imported from, else the current folder."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "train").is_dir() and (root / "data_tools").is_dir():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``synshot`` console script."""
    import importlib

    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] in ("-h", "--help", "help"):
        print(_usage())
        return EXIT_OK if words else EXIT_USAGE
    for n in (2, 1):
        name = " ".join(words[:n])
        if name in COMMANDS:
            target = COMMANDS[name][0]
            _ensure_source_tree_importable()
            module, func = target.split(":")
            try:
                entry = getattr(importlib.import_module(module), func)
            except ModuleNotFoundError as exc:
                if exc.name != module.split(".")[0]:
                    raise
                print(f"error: synshot {name} runs from a SynShot source checkout ({exc.name}/ is not installed "
                      "with the package): cd into the checkout and run it again", file=sys.stderr)
                return EXIT_USAGE
            return int(entry(words[n:]) or 0)
    print(_usage(), file=sys.stderr)
    print(f"error: unknown command {' '.join(words[:2])!r}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
