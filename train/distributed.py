"""The one place that turns launcher variables (SLURM, torchrun, none) into torch.distributed ones.

Why one place: srun, torchrun and a plain ``python -m train`` each describe the job differently;
everything downstream (DeepSpeed, the loader, logging) only ever sees RANK/WORLD_SIZE/LOCAL_RANK/
MASTER_ADDR/MASTER_PORT and the :class:`DistEnv` returned here.

Precedence: variables torchrun sets (``TORCHELASTIC_RUN_ID`` present, or RANK+WORLD_SIZE already
set) win; otherwise SLURM task variables (``SLURM_PROCID``/``SLURM_NTASKS`` inside an ``srun``
step); otherwise a single plain process (rank 0 of 1 on 127.0.0.1 and a free port).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import MutableMapping

DEFAULT_SLURM_PORT_BASE = 20000  # MASTER_PORT = base + SLURM_JOB_ID % 20000 when the script sets none


class DistributedSetupError(RuntimeError):
    """The launcher variables are inconsistent (names the variables and the fix)."""


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" | "slurm" | "single"
    backend: str  # "nccl" | "gloo"
    device: str  # "cuda:N" | "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compact host list syntax: ``n[1-2,5],gpu-[01-03]x,login`` -> host names.

    Pure Python so that it works inside containers without ``scontrol``; zero padding is kept
    (``n[01-02]`` -> ``n01 n02``). Nested brackets do not occur in SLURM host lists.
    """
    hosts: list[str] = []
    # split on commas that are not inside brackets
    parts, depth, cur = [], 0, ""
    for ch in nodelist.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise DistributedSetupError(f"SLURM_JOB_NODELIST={nodelist!r}: unbalanced brackets")
    if cur:
        parts.append(cur)
    for part in parts:
        m = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)", part)
        if not m:
            if "[" in part or "]" in part:
                raise DistributedSetupError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot parse {part!r}")
            hosts.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for rng in ranges.split(","):
            if "-" in rng:
                lo, hi = rng.split("-", 1)
                if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                    raise DistributedSetupError(f"SLURM_JOB_NODELIST={nodelist!r}: bad range {rng!r}")
                width = len(lo)
                hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(f"{prefix}{rng}{suffix}")
    return hosts


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``scontrol show hostnames`` when present, else the parser."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=20, check=True
            ).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass  # fall back to the parser: same answer for every syntax SLURM emits
    hosts = expand_nodelist(nodelist)
    if not hosts:
        raise DistributedSetupError(f"SLURM_JOB_NODELIST={nodelist!r} names no host")
    return hosts[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _int(env: MutableMapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise DistributedSetupError(f"{name}={env[name]!r} is not an integer") from None


def _is_srun_step(step_id: str | None) -> bool:
    """True inside an srun job step; the batch shell has no step id or a pseudo-step id (>= 0xFFFFFFF0)."""
    return step_id is not None and step_id.isdigit() and int(step_id) < 0xFFFFFFF0


def resolve_env(env: MutableMapping[str, str], cuda_available: bool | None = None) -> DistEnv:
    """Work out rank/world/master from ``env`` and write the torch variables back into it.

    ``env`` is normally ``os.environ``; tests pass a dict. Returns the resolved :class:`DistEnv`.
    """
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()

    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env):
        launcher = "torchrun"
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        if "LOCAL_RANK" in env:
            local_rank = _int(env, "LOCAL_RANK")
        elif "SLURM_LOCALID" in env:  # RANK/WORLD_SIZE exported by a wrapper inside an srun step
            local_rank = _int(env, "SLURM_LOCALID")
        else:
            local_rank = rank
        addr = env.get("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in env and world > 1:
            raise DistributedSetupError("RANK/WORLD_SIZE are set but MASTER_PORT is not: launch with torchrun")
        port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else free_port()
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env and _is_srun_step(env.get("SLURM_STEP_ID")):
        # inside an srun step: one task per GPU; the batch shell itself (no SLURM_STEP_ID) is a single process
        launcher = "slurm"
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local_rank = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        elif "SLURM_JOB_NODELIST" in env or "SLURM_NODELIST" in env:
            addr = first_host(env.get("SLURM_JOB_NODELIST") or env["SLURM_NODELIST"])
        elif world == 1:
            addr = "127.0.0.1"
        else:
            raise DistributedSetupError("srun with several tasks but no SLURM_JOB_NODELIST/MASTER_ADDR")
        if "MASTER_PORT" in env:
            port = _int(env, "MASTER_PORT")
        elif "SLURM_JOB_ID" in env:
            port = DEFAULT_SLURM_PORT_BASE + _int(env, "SLURM_JOB_ID") % 20000
        elif world == 1:
            port = free_port()
        else:
            raise DistributedSetupError("srun with several tasks but neither MASTER_PORT nor SLURM_JOB_ID")
    else:
        launcher = "single"
        rank, world, local_rank = 0, 1, 0
        addr, port = "127.0.0.1", free_port()

    if not (0 <= rank < world):
        raise DistributedSetupError(f"rank {rank} is outside world size {world} (launcher: {launcher})")
    env.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank), MASTER_ADDR=addr, MASTER_PORT=str(port)
    )
    backend = "nccl" if cuda_available else "gloo"
    device = f"cuda:{local_rank}" if cuda_available else "cpu"
    return DistEnv(rank, world, local_rank, addr, port, launcher, backend, device)


def setup_distributed(timeout_minutes: float = 30) -> DistEnv:
    """Resolve the environment, pin the CUDA device, and initialise the process group (idempotent).

    On CPU, DeepSpeed's shm_comm op would be JIT-compiled on first init (35-60 s); it is switched off
    here because gloo does not need it.
    """
    import torch

    dist_env = resolve_env(os.environ)
    if dist_env.device.startswith("cuda"):
        n = torch.cuda.device_count()
        if dist_env.local_rank >= n:
            raise DistributedSetupError(
                f"LOCAL_RANK={dist_env.local_rank} but only {n} CUDA devices are visible: one task per GPU "
                "(srun --ntasks-per-node=<gpus per node>, torchrun --nproc_per_node=<gpus>)"
            )
        torch.cuda.set_device(dist_env.local_rank)
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    import deepspeed
    import torch.distributed as tdist

    if not tdist.is_initialized():
        deepspeed.init_distributed(dist_backend=dist_env.backend, auto_mpi_discovery=False,
                                   timeout=timedelta(minutes=timeout_minutes))
    elif tdist.get_world_size() != dist_env.world_size:
        raise DistributedSetupError(
            f"a process group of size {tdist.get_world_size()} already exists, environment says {dist_env.world_size}"
        )
    return dist_env
