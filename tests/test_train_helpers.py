"""Shared helpers of the training tests: a tiny real dataset, a micro prior config, CLI runners.

The dataset is made with the real data pipeline (procedural head model + Mitsuba ray
tracer + shard writer: ``synshot.data.synthesize``) at toy size: 6 identities x 2 expressions x 2
views at 32 px, split by identity into train (8 samples) and val (4). ``synthesize`` skips complete
shards, so every test module of one pytest run reuses the same directory for free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "train" / "tiny.yaml")

# A micro prior: a few hundred Gaussians at 32 px, so one CPU step takes ~1 s.
MICRO = [
    "data.image_size=32", "data.batch_size=2", "data.views_per_sample=2", "data.shuffle_buffer=4",
    "model.uv_size=32", "model.enc_channels=[8,16,16]", "model.dec_channels=[16,16,8]", "model.code_dim=8",
    "model.codebook_size=32", "model.feature_channels=8", "model.regressor_hidden=16",
    "model.parts={face: {grid_size: 24, regions: [face, ears, neck, eyes, mouth]}, scalp: {grid_size: 24, regions: [scalp]}}",
    "optim.warmup_steps=2", "optim.lr=3e-3", "logging.progress=false",
]


def make_dataset(root: Path) -> Path:
    from synshot.data.synthesize import SynthConfig, synthesize

    cfg = SynthConfig(num_identities=6, expressions_per_identity=2, views=2, image_size=32, uv_size=32, spp=1,
                      samples_per_shard=4, splits={"train": 0.67, "val": 0.33, "test": 0.0})
    synthesize(cfg, str(root), progress=False)
    return root


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.getbasetemp() / "train_dataset")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The test process's environment without launcher variables (pytest may itself run under srun)."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("DS_ACCELERATOR", "cpu")
    env["OMP_NUM_THREADS"] = "1"  # same threads in every run -> bit-identical reductions; 2 cores are shared
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    return env


def train_cmd(args: list[str], nproc: int = 1, module: str = "train") -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_port", str(free_port()), "-m", module, *args]


def run_train(args: list[str], nproc: int = 1, timeout: float = 600, module: str = "train"):
    """Run the CLI to completion; returns CompletedProcess (stdout+stderr merged in .stdout)."""
    return subprocess.run(train_cmd(args, nproc, module), cwd=REPO, env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def run_and_signal(args: list[str], when: str, sig: int = signal.SIGUSR1, timeout: float = 600):
    """Start the CLI, send ``sig`` once a line containing ``when`` was printed; returns (rc, output)."""
    proc = subprocess.Popen(train_cmd(args), cwd=REPO, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, sent, deadline = [], False, time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if not sent and when in line:
                proc.send_signal(sig)
                sent = True
            if time.monotonic() > deadline:
                raise TimeoutError("".join(lines[-50:]))
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sent, "never saw " + repr(when) + " in:\n" + "".join(lines[-50:])
    return rc, "".join(lines)


def tail(out: str, n: int = 40) -> str:
    return "\n".join(out.splitlines()[-n:])
