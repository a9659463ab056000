"""Renderer benchmark: forward+backward time and peak memory of ``rasterize`` on a head-like scene.

Each case runs in a fresh subprocess so that its peak memory is its own:
- CPU: peak RSS increase = ``ru_maxrss`` after one cold forward+backward minus the resident set
  just before it (read from /proc/self/statm). ``tracemalloc`` does not see torch's allocations.
- CUDA: ``torch.cuda.max_memory_allocated`` after the run minus ``memory_allocated`` before it.
Time is the median of warm repeats of forward + ``loss.backward()`` (CUDA: synchronised): wall
time with torch's default threads, and (CPU) process CPU time with ONE thread, which stays
meaningful when other jobs share the cores (two spinning OpenMP threads on an oversubscribed
2-core machine can be 10x slower in wall time).

Usage: ``synshot bench --only render`` (all figures), or one case:
``PYTHONPATH=. python -m synshot.bench.render --case 10000 128 --device cpu --backend torch``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time


def head_scene(n: int, size: int, device="cpu", sh_degree: int = 3, seed: int = 0):
    """N Gaussians on a head-sized ellipsoid (0.16 x 0.22 x 0.20 m), filling ~80% of a size^2 view.

    Scales follow the surface spacing (like UV-map Gaussians of the prior), so neighbours overlap
    and the front surface is nearly opaque; the back surface is still binned and sorted.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    means = d * torch.tensor([0.08, 0.11, 0.10])
    spacing = math.sqrt(4 * math.pi * 0.095**2 / n)
    scales = 0.6 * spacing * torch.exp(0.25 * torch.randn(n, 3, generator=g))
    scales[:, 2] *= 0.2  # flat splats
    quats = torch.randn(n, 4, generator=g)
    opac = torch.sigmoid(torch.randn(n, generator=g) + 2.0)
    sh = 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    vm = torch.eye(4)[None]
    vm[0, 2, 3] = 0.6
    f = 2.2 * size
    K = torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]])
    tensors = [t.to(device) for t in (means, quats, scales, opac, sh, vm, K)]
    return tensors


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_case(n: int, size: int, device: str, backend: str, repeats: int, threads: int = 0) -> dict:
    """Run in the current process (call in a fresh one): cold peak memory, then warm timings."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)

    from synshot.render import rasterize

    means, quats, scales, opac, sh, vm, K = head_scene(n, size, device)
    params = [t.requires_grad_() for t in (means, quats, scales, opac, sh)]
    cuda = device.startswith("cuda")

    def step():
        out = rasterize(*params, vm, K, size, size, backend=backend)
        loss = out.rgb.square().mean() + out.alpha.mean() + 0.1 * out.depth.mean()
        loss.backward()
        for p in params:
            p.grad = None
        return out

    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    out = step()
    coverage = float(out.alpha.detach().mean())
    del out
    if cuda:
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / 2**20
    times, cpu = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"time_s": statistics.median(times), "cpu_s": statistics.median(cpu), "peak_mb": peak_mb,
            "coverage": coverage, "threads": torch.get_num_threads()}


def _run_case(n: int, size: int, device: str, backend: str, repeats: int, threads: int = 0) -> dict:
    cmd = [sys.executable, "-m", "synshot.bench.render", "--case", str(n), str(size), "--device", device,
           "--backend", backend, "--repeats", str(repeats), "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"render bench case {n}/{size}/{device}/{backend} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    import torch

    repeats = 2 if quick else 5
    figures: dict = {}
    for n, size in ((10_000, 128), (50_000, 256)):
        tag = f"{n // 1000}k_{size}"
        r = _run_case(n, size, "cpu", "torch", repeats)
        figures[f"splat_fwd_bwd_s_{tag}"] = r["time_s"]
        figures[f"splat_fwd_bwd_peak_mb_{tag}"] = r["peak_mb"]
        figures[f"splat_fwd_bwd_cpu_s_1thread_{tag}"] = _run_case(n, size, "cpu", "torch", repeats, 1)["cpu_s"]
    if torch.cuda.is_available():
        for n, size in ((50_000, 256), (200_000, 512)):
            for backend in ("torch", "gsplat"):
                r = _run_case(n, size, "cuda", backend, repeats)
                tag = f"{n // 1000}k_{size}"
                figures[f"splat_cuda_{backend}_fwd_bwd_s_{tag}"] = r["time_s"]
                figures[f"splat_cuda_{backend}_peak_mb_{tag}"] = r["peak_mb"]
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs=2, type=int, metavar=("N", "SIZE"), help="run one case and print JSON")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="torch", choices=["torch", "gsplat", "auto"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(measure_case(args.case[0], args.case[1], args.device, args.backend, args.repeats,
                                      args.threads)))
    else:
        print(json.dumps(run(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
