"""``synshot plan``: a capacity plan for a training config at a given cluster size.

Every figure is computed from three kinds of input, and the output says which one each used:
``measured`` (the JSON of ``make bench`` on the machine it ran on: loader throughput, bytes per
sample, ray-tracing CPU cost, checkpoint write speed), ``config`` (the training and data configs) and
``assumed`` (configs/plan/assumptions.yaml: the accelerator's step time, multi-node efficiency, file
system bandwidth; a ``make gpu-check`` JSON replaces the GPU step time by a measurement).
docs/scale.md explains each figure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import Field

from synshot.cli import Command, UsageError, get_logger
from synshot.config import ConfigBase, load_config

log = get_logger("synshot.plan")
REPO = Path(__file__).resolve().parents[1]


class PlanConfig(ConfigBase):
    """What to plan for and the assumptions about hardware that was not measured."""

    train_config: str = "configs/train/paper.yaml"
    data_config: str = "configs/data/paper.yaml"
    bench: str = "results/bench.json"
    gpu_figures: str | None = None  # a `make gpu-check` JSON: its measured step time replaces gpu_step_s
    nodes: int = Field(4, ge=1)
    gpus_per_node: int = Field(8, ge=1)
    gpu_name: str = "NVIDIA H100 80GB (assumed)"
    gpu_step_s: float = Field(0.6, gt=0)
    scaling_efficiency: float = Field(0.9, gt=0, le=1)
    cpu_cores_per_node: int = Field(64, ge=1)
    fs_write_gb_per_s: float = Field(5.0, gt=0)
    fs_read_gb_per_s_per_node: float = Field(2.0, gt=0)


def _figure(bench: dict, prefix: str) -> tuple[str, float]:
    """The bench figure whose name starts with ``prefix`` (sizes are part of the names)."""
    hits = sorted(k for k in bench if k.startswith(prefix))
    if not hits:
        raise UsageError(f"the bench results lack '{prefix}*': run `make bench` (or `synshot bench "
                         f"--only scale train`) first, then pass its JSON as bench=...")
    return hits[0], float(bench[hits[0]])


def _param_count(model_cfg) -> int:
    import torch

    from synshot.model import SynShotPrior

    try:
        with torch.device("meta"):
            model = SynShotPrior(model_cfg)
    except Exception:  # a component that computes at init time: build it for real (slower)
        model = SynShotPrior(model_cfg)
    return sum(p.numel() for p in model.parameters())


def plan(cfg: PlanConfig) -> dict[str, Any]:
    """All figures as ``{name: {"value", "unit", "source", "how"}}`` plus the inputs used."""
    from synshot.data.synthesize import SynthConfig
    from train.config import load_train_config

    train = load_train_config(REPO / cfg.train_config if not Path(cfg.train_config).is_file() else cfg.train_config)
    data_path = cfg.data_config if Path(cfg.data_config).is_file() else REPO / cfg.data_config
    data = load_config(SynthConfig, data_path)
    bench_path = Path(cfg.bench)
    if not bench_path.is_file():
        raise UsageError(f"{bench_path}: no bench results; run `make bench` first (or pass bench=PATH)")
    bench = json.loads(bench_path.read_text()).get("figures", {})
    out: dict[str, dict[str, Any]] = {}

    def put(name: str, value: float, unit: str, source: str, how: str) -> float:
        out[name] = {"value": value, "unit": unit, "source": source, "how": how}
        return value

    gpus = cfg.nodes * cfg.gpus_per_node
    step_s, step_src = cfg.gpu_step_s, "assumed"
    if cfg.gpu_figures:
        gpu = json.loads(Path(cfg.gpu_figures).read_text()).get("figures", {})
        if "train_step_s" in gpu:
            step_s, step_src = float(gpu["train_step_s"]), f"measured ({cfg.gpu_figures}: train_step_s)"

    # ---- dataset
    samples = data.num_identities * data.expressions_per_identity
    images = put("dataset_images", samples * data.views, "images", "config",
                 f"{data.num_identities} identities x {data.expressions_per_identity} expressions x {data.views} views")
    train_samples = put("dataset_train_samples", samples * data.splits.train, "samples", "config",
                        f"{samples} samples x train fraction {data.splits.train}")

    # ---- data generation
    name, cpu_per_mpx = _figure(bench, "scale_synth_cpu_s_per_megasample_px")
    name_fixed, cpu_per_view = _figure(bench, "scale_synth_cpu_s_per_view_fixed")
    mpx = images * data.image_size**2 * data.spp / 1e6
    core_h = put("datagen_cpu_core_hours", (mpx * cpu_per_mpx + images * cpu_per_view) / 3600, "core-h",
                 f"measured ({name}, {name_fixed})",
                 f"{images:.3g} views x {data.image_size}^2 px x {data.spp} spp = {mpx:.3g} M px-samples x "
                 f"{cpu_per_mpx:.3g} CPU-s per M + {images:.3g} views x {cpu_per_view:.3g} CPU-s fixed per view")
    put("datagen_wall_hours_on_cluster", core_h / (cfg.nodes * cfg.cpu_cores_per_node), "h",
        "measured + assumed", f"core-hours / ({cfg.nodes} nodes x {cfg.cpu_cores_per_node} cores)")

    # ---- storage
    n_view, mb_view = _figure(bench, "scale_shard_mb_per_view_")
    ref_size = int(n_view.rsplit("_", 1)[1])
    n_maps, mb_maps = _figure(bench, "scale_shard_mb_maps_per_sample_uv")
    ref_uv = int(n_maps.rsplit("uv", 1)[1])
    mb_sample = put("storage_mb_per_sample",
                    data.views * mb_view * (data.image_size / ref_size) ** 2 + mb_maps * (data.uv_size / ref_uv) ** 2,
                    "MB", f"measured ({n_view}, {n_maps})",
                    f"{data.views} views x {mb_view:.3g} MB x ({data.image_size}/{ref_size})^2 + maps {mb_maps:.3g} MB x "
                    f"({data.uv_size}/{ref_uv})^2 (sizes assumed proportional to pixels)")
    put("storage_tb", samples * mb_sample / 2**20, "TB", "measured + config", f"{samples} samples x {mb_sample:.3g} MB")
    shards = put("storage_shards", math.ceil(samples / data.samples_per_shard), "shards", "config",
                 f"{samples} samples / {data.samples_per_shard} per shard")
    put("storage_shard_gb", data.samples_per_shard * mb_sample / 1024, "GB", "measured + config",
        f"{data.samples_per_shard} samples x {mb_sample:.3g} MB")

    # ---- loader bandwidth
    micro, accum = train.data.batch_size, train.distributed.grad_accum
    per_view = train.data.views_per_sample or data.views
    need_samples = put("loader_need_samples_per_s_per_gpu", micro * accum / step_s, "samples/s", step_src,
                       f"{micro} x {accum} samples per step / {step_s:.3g} s per step")
    put("loader_need_images_per_s_per_gpu", need_samples * per_view, "images/s", step_src,
        f"x {per_view} views per sample")
    put("loader_need_mb_per_s_per_gpu", need_samples * mb_sample, "MB/s", f"{step_src} + measured",
        f"{need_samples:.3g} samples/s x {mb_sample:.3g} MB (whole samples are read, {per_view} of {data.views} views decoded)")
    n_rate, rate = _figure(bench, "scale_loader_samples_per_s_")
    base_size = int(n_rate.rsplit("_", 1)[1])
    base_views = _base_views()
    decoded_base = base_views * base_size**2 + 3 * 256**2
    decoded_here = per_view * train.data.image_size**2 + 3 * train.model.uv_size**2
    per_proc = put("loader_samples_per_s_per_process", rate * decoded_base / decoded_here, "samples/s",
                   f"measured ({n_rate})",
                   f"{rate:.3g} samples/s at {base_views} views x {base_size} px, scaled by decoded pixels "
                   f"({decoded_base} -> {decoded_here}, assumed proportional)")
    workers = put("loader_processes_needed_per_gpu", need_samples / per_proc, "processes", "measured + assumed",
                  f"{need_samples:.3g} / {per_proc:.3g} (config has data.num_workers={train.data.num_workers})")
    put("loader_cpu_cores_needed_per_node", math.ceil(workers) * cfg.gpus_per_node, "cores", "measured + assumed",
        f"ceil({workers:.3g}) x {cfg.gpus_per_node} GPUs (node has {cfg.cpu_cores_per_node})")
    put("loader_read_gb_per_s_per_node", need_samples * mb_sample * cfg.gpus_per_node / 1024, "GB/s",
        "measured + assumed", f"per-GPU MB/s x {cfg.gpus_per_node} (assumed storage: "
                              f"{cfg.fs_read_gb_per_s_per_node} GB/s per node)")

    # ---- training time
    global_batch = put("train_global_batch", micro * accum * gpus, "samples", "config",
                       f"{micro} x {accum} x {gpus} GPUs")
    eff = cfg.scaling_efficiency if cfg.nodes > 1 else 1.0
    hours = put("train_hours", train.max_steps * step_s / eff / 3600, "h", step_src,
                f"{train.max_steps} steps x {step_s:.3g} s / efficiency {eff}")
    put("train_gpu_hours", hours * gpus, "GPU-h", step_src, f"{hours:.3g} h x {gpus} GPUs")
    put("train_epochs", train.max_steps * global_batch / train_samples, "epochs", "config",
        f"{train.max_steps} steps x {global_batch} / {train_samples:.0f} training samples")

    # ---- checkpoints
    params = put("model_parameters", _param_count(train.model), "parameters", "config", "SynShotPrior(model config)")
    ckpt_gb = put("checkpoint_gb", params * 16 / 2**30, "GB", "config",
                  "fp32 weights (4 B) + ZeRO fp32 master, Adam exp_avg, exp_avg_sq (12 B) per parameter")
    n_w, local = _figure(bench, "scale_ckpt_write_mb_per_s")
    put("checkpoint_write_s_measured_disk", ckpt_gb * 1024 / local, "s", f"measured ({n_w})",
        f"{ckpt_gb:.3g} GB at {local:.3g} MB/s (the bench machine's disk, one writer)")
    put("checkpoint_write_s_cluster_fs", ckpt_gb / cfg.fs_write_gb_per_s, "s", "assumed",
        f"{ckpt_gb:.3g} GB at {cfg.fs_write_gb_per_s} GB/s (ranks write their shards in parallel)")
    put("checkpoint_disk_gb", ckpt_gb * train.checkpoint.keep_last, "GB", "config",
        f"x keep_last={train.checkpoint.keep_last}")
    return {"inputs": {"plan": json.loads(cfg.model_dump_json()), "gpus": gpus, "gpu_step_s": step_s,
                       "gpu_step_source": step_src},
            "figures": out}


def _base_views() -> int:
    from train.config import load_train_config

    return load_train_config(REPO / "configs" / "train" / "base.yaml").data.views_per_sample or 4


def format_plan(result: dict[str, Any]) -> str:
    rows = [("figure", "value", "unit", "source", "how")]
    for name, f in result["figures"].items():
        v = f["value"]
        shown = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
        rows.append((name, shown, f["unit"], f["source"], f["how"]))
    lines = [f"| {' | '.join(r)} |" for r in rows]
    lines.insert(1, "|" + "---|" * 5)
    inp = result["inputs"]
    p = inp["plan"]
    head = (f"capacity plan: {p['train_config']} + {p['data_config']} on {p['nodes']} nodes x {p['gpus_per_node']} "
            f"GPUs ({inp['gpus']} x {p['gpu_name']}), GPU step {inp['gpu_step_s']} s ({inp['gpu_step_source']}); "
            f"measured inputs: {p['bench']}")
    return head + "\n\n" + "\n".join(lines)


CLI = Command("plan", "Capacity plan (data generation, storage, loader bandwidth, training time, checkpoints) "
              "from `make bench` figures and stated accelerator assumptions.",
              config_cls=PlanConfig, default_config="configs/plan/assumptions.yaml",
              out_help="JSON file for the figures (default results/plan.json)",
              example="synshot plan train_config=configs/train/paper.yaml nodes=4 gpus_per_node=8")


def run(args, cfg: PlanConfig) -> int:
    result = plan(cfg)
    text = format_plan(result)
    print(text)
    out = Path(args.out or "results/plan.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log.info("wrote %s", out)
    return 0


def main(argv=None) -> int:
    return CLI.main(argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
