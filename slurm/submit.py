"""Submit training through submitit: one task per GPU, checkpoint + requeue on preemption/time-out.

    synshot submit --config configs/train/paper.yaml --nodes 4 --gpus-per-node 8 \\
        [--partition gpu] [--account proj] [--time-min 1440] [--setup 'module load cuda'] \\
        [--local] [--wait] [key=value ...]

Each submitit task runs ``python -m train`` as a child process (:class:`TrainTask`). Why a child
and not an in-process call: the trainer owns SIGUSR1/SIGTERM (checkpoint at the next step, exit
75), submitit owns SIGUSR2 (its time-out/preemption signal); in one process one of them would
lose its handler. The wrapper maps submitit's ``JobEnvironment`` to RANK/LOCAL_RANK/WORLD_SIZE/
MASTER_ADDR/MASTER_PORT for the child (same mapping as train.sbatch), turns USR2 (and USR1) into
USR1 for the trainer, and when the trainer exits with ``EXIT_PREEMPTED`` lets submitit requeue the
job (rank 0 only); the requeued job resumes from the latest checkpoint because the trainer always
does. A SIGTERM alone (scancel, SLURM's own preemption) never requeues from here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Optional

import submitit
from pydantic import Field, model_validator

from synshot.cli import Command, get_logger
from synshot.config import ConfigBase, validate_config

log = get_logger(__name__)

REPO = Path(__file__).resolve().parent.parent
USR2_GRACE_S = 15.0  # after a SIGTERM-triggered checkpoint, wait this long for submitit's USR2


class SubmitConfig(ConfigBase):
    """Where and how big the job is; the training itself is configured by ``config`` + ``overrides``."""

    config: str
    overrides: list[str] = []
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(1, ge=0)  # 0 = CPU-only job
    tasks_per_node: Optional[int] = Field(None, ge=1)  # default: one per GPU (1 when gpus_per_node=0)
    cpus_per_task: int = Field(4, ge=1)
    time_min: int = Field(24 * 60, ge=1)
    signal_delay_s: int = Field(300, ge=1)  # USR2 this long before the time limit -> checkpoint
    max_requeues: int = Field(100, ge=0)  # time-outs/preemptions survived before giving up
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    setup: list[str] = []  # shell lines run before srun (module load, venv activation)
    job_name: str = "synshot-train"
    folder: str = "runs/submitit/%j"
    python: str = Field(default_factory=lambda: sys.executable)
    local: bool = False  # run the tasks as local processes (submitit LocalExecutor), for debugging
    module: str = "train"  # python module each task runs (its exit codes must follow train.errors)

    @model_validator(mode="after")
    def _check(self) -> "SubmitConfig":
        if not self.local and self.signal_delay_s >= self.time_min * 60:
            raise ValueError(
                f"signal_delay_s={self.signal_delay_s} must be shorter than the time limit "
                f"(time_min={self.time_min} -> {self.time_min * 60} s), or the job is signalled at once"
            )
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ValueError(
                f"tasks_per_node={self.tasks_per_node} but gpus_per_node={self.gpus_per_node}: "
                "the trainer runs one task per GPU (it uses cuda:LOCAL_RANK)"
            )
        return self

    @property
    def ntasks_per_node(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)


def master_port(job_id: str) -> int:
    """Rendezvous port from the job id (same rule as train.sbatch): stable across requeues."""
    num = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return 20000 + num % 20000


def distributed_env(job_env: Any) -> dict[str, str]:
    """submitit.JobEnvironment -> the torch.distributed variables train.distributed reads first."""
    return {
        "RANK": str(job_env.global_rank),
        "LOCAL_RANK": str(job_env.local_rank),
        "WORLD_SIZE": str(job_env.num_tasks),
        "MASTER_ADDR": job_env.hostnames[0] if job_env.hostnames else "127.0.0.1",
        "MASTER_PORT": str(master_port(str(job_env.raw_job_id))),
    }


def _ignore_usr2() -> None:  # runs in the child before exec: SIG_IGN survives exec
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrainTask(submitit.helpers.Checkpointable):
    """The submitit callable; checkpointable because the trainer resumes from its latest checkpoint
    (the default ``checkpoint()`` resubmits the same arguments)."""

    def __init__(self, argv: list[str], python: str, cwd: str, module: str = "train") -> None:
        self.argv, self.python, self.cwd, self.module = list(argv), python, cwd, module

    def __call__(self) -> dict[str, Any]:
        from train.errors import EXIT_PREEMPTED

        job_env = submitit.JobEnvironment()
        env = {**os.environ, **distributed_env(job_env)}
        env["PYTHONPATH"] = self.cwd + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        state = {"preempt": False}
        submitit_usr2 = signal.getsignal(signal.SIGUSR2)
        child: subprocess.Popen | None = None

        def on_preempt(signum, frame):  # USR2 from submitit (time-out, _interrupt) or a USR1
            state["preempt"] = True
            print(f"[submit] got {signal.Signals(signum).name}: asking the trainer to checkpoint", flush=True)
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGUSR1)

        def on_term(signum, frame):  # SLURM signals the trainer itself too; only remember it here
            print("[submit] got SIGTERM (the trainer checkpoints on it)", flush=True)

        signal.signal(signal.SIGUSR2, on_preempt)
        signal.signal(signal.SIGUSR1, on_preempt)
        signal.signal(signal.SIGTERM, on_term)
        cmd = [self.python, "-m", self.module, *self.argv]
        print(
            f"[submit] rank {env['RANK']}/{env['WORLD_SIZE']} master {env['MASTER_ADDR']}:{env['MASTER_PORT']} "
            f"restart {os.environ.get('SLURM_RESTART_COUNT', 0)}: {' '.join(cmd)}",
            flush=True,
        )
        child = subprocess.Popen(cmd, cwd=self.cwd, env=env, preexec_fn=_ignore_usr2)
        rc = child.wait()  # signal handlers run while waiting (PEP 475 retries the wait)
        print(f"[submit] trainer exited with {rc}", flush=True)
        if rc == 0:
            return {"exit_code": 0, "rank": job_env.global_rank,
                    "restarts": int(os.environ.get("SLURM_RESTART_COUNT", 0))}
        if rc != EXIT_PREEMPTED:
            raise RuntimeError(f"{' '.join(cmd)} failed with exit code {rc} (see the log above)")
        deadline = time.monotonic() + USR2_GRACE_S
        while not state["preempt"] and time.monotonic() < deadline:
            time.sleep(0.2)
        if not state["preempt"]:
            print("[submit] checkpointed after SIGTERM only: not requeueing (cancelled, or SLURM requeues)", flush=True)
            sys.exit(EXIT_PREEMPTED)  # SystemExit: no result pickle, so the job is not reported "done"
        if job_env.global_rank != 0 or not callable(submitit_usr2):
            sys.exit(EXIT_PREEMPTED)
        # submitit's own handler: calls self.checkpoint() (same task again), runs `scontrol requeue`
        # and exits; it counts the signal against max_num_timeout.
        submitit_usr2(signal.SIGUSR2, None)
        sys.exit(EXIT_PREEMPTED)  # only reached if submitit decided not to requeue


def make_executor(cfg: SubmitConfig):
    folder = cfg.folder
    if cfg.local:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=cfg.time_min, nodes=1, tasks_per_node=cfg.ntasks_per_node,
                             gpus_per_node=cfg.gpus_per_node, cpus_per_task=cfg.cpus_per_task)
        return ex
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.max_requeues, python=cfg.python)
    params: dict[str, Any] = dict(
        job_name=cfg.job_name,
        time=cfg.time_min,
        nodes=cfg.nodes,
        ntasks_per_node=cfg.ntasks_per_node,
        cpus_per_task=cfg.cpus_per_task,
        signal_delay_s=cfg.signal_delay_s,
        setup=list(cfg.setup),
        additional_parameters={"requeue": True},  # clusters with JobRequeue=0 would refuse `scontrol requeue`
    )
    if cfg.gpus_per_node:
        params["gpus_per_node"] = cfg.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cfg, key):
            params[key] = getattr(cfg, key)
    ex.update_parameters(**params)
    return ex


def submit(cfg: SubmitConfig):
    """Validate the training config now (not after hours in the queue), then submit; returns the job."""
    from train.config import load_train_config

    load_train_config(cfg.config, cfg.overrides)
    argv = ["--config", cfg.config, *cfg.overrides]
    task = TrainTask(argv, cfg.python, str(REPO), cfg.module)
    return make_executor(cfg).submit(task)


CLI = Command("submit", "Submit training to SLURM through submitit (one task per GPU, requeue on preemption).",
              config_cls="train.config:TrainConfig", default_config="configs/train/tiny.yaml",
              out_help="submitit logs and pickles (default runs/submitit/%%j)",
              example="synshot submit --config configs/train/paper.yaml --nodes 4 --gpus-per-node 8 max_steps=1000")
_JOB = CLI.parser.add_argument_group("job (SubmitConfig)")
_JOB.add_argument("--nodes", type=int)
_JOB.add_argument("--gpus-per-node", type=int, help="one task per GPU; 0 = CPU job (default 1)")
_JOB.add_argument("--tasks-per-node", type=int, help="only for CPU jobs (--gpus-per-node 0)")
_JOB.add_argument("--cpus-per-task", type=int, help="default 4")
_JOB.add_argument("--time-min", type=int, help="time limit in minutes (default 1440)")
_JOB.add_argument("--signal-delay-s", type=int, help="checkpoint this long before the limit (default 300)")
_JOB.add_argument("--max-requeues", type=int, help="default 100")
_JOB.add_argument("--partition")
_JOB.add_argument("--account")
_JOB.add_argument("--qos")
_JOB.add_argument("--constraint")
_JOB.add_argument("--setup", action="append", help="shell line before srun (repeatable)")
_JOB.add_argument("--job-name")
_JOB.add_argument("--python", help="interpreter on the compute nodes (default: this one)")
_JOB.add_argument("--local", action="store_true", default=None, help="run locally (submitit LocalExecutor), no SLURM")
CLI.parser.add_argument("--wait", action="store_true", help="wait for the result and print it")
_NOT_JOB = {"config", "overrides", "out", "wait", "verbose", "quiet"}


def submit_config(args) -> SubmitConfig:
    """The job settings of a parsed line; the training config was validated by the parse itself."""
    data = {k: v for k, v in vars(args).items() if k not in _NOT_JOB and v is not None}
    data.update(config=args.config, overrides=list(args.overrides))
    if args.out:
        data["folder"] = args.out
    return validate_config(SubmitConfig, data, "synshot submit arguments")


def parse_args(argv: list[str] | None = None) -> tuple[SubmitConfig, bool]:
    args, _ = CLI.parse(argv)
    return submit_config(args), args.wait


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, _train_cfg) -> int:
    job = submit(submit_config(args))
    log.info("submitted job %s; logs: %s", job.job_id, job.paths.stdout)
    if args.wait:
        print(job.results()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
