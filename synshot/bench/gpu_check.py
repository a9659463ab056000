"""``make gpu-check``: everything that needs a GPU, in one run of under 10 minutes, into one JSON.

Run it as is on a machine with CUDA (``python -m synshot.bench.gpu_check --out results/gpu_check.json``):

1. the ``gpu`` tests (gsplat rasteriser parity with the torch reference, ray tracer and head on CUDA);
2. the render, model and invert benchmarks (``python -m synshot.bench --only render model invert``);
3. training at the base config's image size (512 px, base prior, bench shards): fp32 and bf16, step
   time split, images/s, peak GPU memory;
4. the same with 2 processes over NCCL when 2 GPUs are visible.

Each part has its own time limit; a failing part records its error and the others still run. On a
machine without CUDA it refuses at once (exit 2). ``synshot plan gpu_figures=<json>`` uses the measured
step time instead of its assumption.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUDGET_S = {"gpu_tests": 150, "benches": 180, "train": 150, "train_nccl": 90}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=timeout)
        return res.returncode, res.stdout, time.perf_counter() - t0
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\n(timed out after {timeout:.0f} s)", time.perf_counter() - t0


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.splitlines()[-n:])


def gpu_tests(figures: dict, errors: dict) -> None:
    rc, out, wall = _run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"], BUDGET_S["gpu_tests"])
    last = [line for line in out.splitlines() if " passed" in line or " failed" in line or " error" in line]
    figures["gpu_tests_rc"] = rc
    figures["gpu_tests_summary"] = last[-1] if last else _tail(out, 3)
    figures["gpu_tests_wall_s"] = wall
    if rc != 0:
        errors["gpu_tests"] = _tail(out)


def benches(figures: dict, errors: dict, out_dir: Path) -> None:
    path = out_dir / "gpu_bench.json"
    rc, out, wall = _run([sys.executable, "-m", "synshot.bench", "--only", "render", "model", "invert",
                          "--out", str(path)], BUDGET_S["benches"])
    if path.is_file():
        data = json.loads(path.read_text())
        figures.update({f"bench_{k}": v for k, v in data.get("figures", {}).items()})
        errors.update({f"bench_{k}": v for k, v in data.get("errors", {}).items()})
    if rc != 0:
        errors["benches"] = _tail(out)
    figures["benches_wall_s"] = wall


def _read_tb(run_dir: Path, skip: int) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        vals = [e.value for e in acc.Scalars(tag) if e.step > skip] or [e.value for e in acc.Scalars(tag)]
        out[tag] = max(vals) if tag.startswith("mem/") else sum(vals) / len(vals)
    return out


def train(figures: dict, errors: dict, work: Path, nproc: int) -> None:
    from synshot.bench.data import write_bench_shards
    from train.config import load_train_config

    base = load_train_config(REPO / "configs" / "train" / "base.yaml")
    data = work / "data"
    if not data.exists():
        write_bench_shards(str(data), 32, per_shard=8, views=8, size=base.data.image_size, uv=base.model.uv_size,
                           image_format="jpg")
    steps, skip = 16, 4
    for bf16 in ((True, False) if nproc == 1 else (True,)):
        name = f"p{nproc}_{'bf16' if bf16 else 'fp32'}"
        args = ["--config", str(REPO / "configs" / "train" / "base.yaml"), f"data.url={data}", f"out_dir={work / 'runs'}",
                f"name={name}", f"max_steps={steps}", "logging.every_n_steps=1", "logging.val_samples=0",
                "logging.image_every_n_steps=100000", "logging.progress=false", f"checkpoint.every_n_steps={steps}",
                f"distributed.bf16={str(bf16).lower()}", "data.num_workers=4", "loss.lpips=0", "--resume", "never"]
        cmd = [sys.executable, "-m", "train", *args] if nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "train", *args]
        rc, out, wall = _run(cmd, BUDGET_S["train" if nproc == 1 else "train_nccl"])
        if rc != 0:
            errors[f"train_{name}"] = _tail(out)
            continue
        tb = _read_tb(work / "runs" / name, skip)
        prefix = f"train_{name}_"
        figures[prefix + "step_s"] = tb.get("perf/step_s")
        figures[prefix + "images_per_s_per_gpu"] = tb.get("perf/images_per_s_per_gpu")
        figures[prefix + "images_per_s_total"] = tb.get("perf/images_per_s_total")
        figures[prefix + "gpu_peak_mb"] = tb.get("mem/gpu_peak_allocated_mb")
        for phase in ("data_wait", "forward", "render_forward", "backward", "optimizer", "comm"):
            figures[prefix + f"{phase}_s"] = tb.get(f"time/{phase}_s")
        figures[prefix + "wall_s"] = wall
        if nproc == 1 and bf16:
            figures["train_step_s"] = tb.get("perf/step_s")  # what `synshot plan gpu_figures=...` reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synshot.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/gpu_check.json")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: gpu-check needs a CUDA GPU and a CUDA build of torch; no CUDA device is visible "
              f"(torch {torch.__version__}, torch.cuda.is_available() is False). Run it on a GPU node: "
              "make gpu-check", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_gpu = torch.cuda.device_count()
    figures: dict = {"gpu": torch.cuda.get_device_name(0), "gpu_count": n_gpu, "torch": torch.__version__,
                     "cuda": torch.version.cuda, "bf16_supported": bool(torch.cuda.is_bf16_supported())}
    errors: dict = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        for part, fn in (("gpu_tests", lambda: gpu_tests(figures, errors)),
                         ("benches", lambda: benches(figures, errors, out.parent)),
                         ("train", lambda: train(figures, errors, work, 1)),
                         ("train_nccl", lambda: train(figures, errors, work, 2) if n_gpu >= 2 else
                          figures.__setitem__("train_nccl", f"skipped: {n_gpu} GPU visible"))):
            print(f"[gpu-check] {part} ...", flush=True)
            try:
                fn()
            except Exception as exc:  # one broken part must not hide the others' figures
                errors[part] = f"{type(exc).__name__}: {exc}"
            out.write_text(json.dumps({"figures": figures, "errors": errors}, indent=2, sort_keys=True))
    figures["total_wall_s"] = time.perf_counter() - t0
    out.write_text(json.dumps({"figures": figures, "errors": errors}, indent=2, sort_keys=True))
    for k in sorted(figures):
        print(f"{k:48s} {figures[k]}")
    for k, v in errors.items():
        print(f"[gpu-check] ERROR {k}: {str(v)[-300:]}")
    print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
