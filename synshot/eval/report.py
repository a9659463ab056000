"""report.md, metrics.json, a PSNR plot and per-subject image grids from the evaluation results.

Every number is a mean over subjects x frames with its 95 % two-level bootstrap interval
(synshot.eval.stats); the verdict compares the full method with the no-prior baseline through the
paired interval of their per-frame difference: "beats" only when it excludes 0.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from synshot import fsio
from synshot.eval.metrics import HIGHER_IS_BETTER, absent_metrics
from synshot.eval.protocol import ORACLE_METHOD, MethodResult, is_train_seed_method, train_seed_of
from synshot.eval.stats import DEFAULT_REPLICATES, Interval, bootstrap, paired_difference, verdict_word
from synshot.invert.subject import Subject
from synshot.images import image_grid, save_png, to_uint8

METHOD_ORDER = ("no_prior", "prior_only", "stage1_only", "full", ORACLE_METHOD)
METHOD_DESCRIPTIONS = {
    "no_prior": "no prior: Gaussians on the tracked mesh fitted from scratch (GaussianAvatars recipe), "
                "same steps, ~same Gaussian count and same loss terms as the full method",
    "prior_only": "prior, no tuning: encoder output on the unwrapped inputs",
    "stage1_only": "stage 1 only: pivot search (E_id)",
    "full": "full method: stage 1 + stage 2 pivotal tuning",
    ORACLE_METHOD: "the full method given the generator's true identity, expressions, poses and cameras instead "
                   "of the tracked ones: what perfect tracking would give; an upper bound, never in the verdict",
}
GEOMETRY_TEXT = {
    "tracked": "**Geometry: tracked.** Every method gets the same inputs: the face tracker's fit (identity, "
               "per-image expression, head pose and camera) to the subject's 3 input images and masks only; the "
               "tracker never reads the subject's cameras.json/params.json (synshot.eval.tracked). Alignment rule "
               "(no eval image is used; synshot.eval.align): the eval frames keep their recorded camera, head pose "
               "and expression as the driving signal. A monocular fit recovers the head only up to a similarity, so "
               "the tracked head frame is mapped onto the recorded one by the similarity that best maps the tracked "
               "head-to-camera transforms (w2c @ head_pose) of the 3 input photos onto their recorded ones (medoid "
               "rotation over the photos, then scale and translation by reprojection over the inlier photos); the "
               "eval cameras are re-expressed in the tracked head frame. Whatever tracking gets wrong beyond that "
               "similarity (shape, per-photo pose and expression) counts against every method, as on a user's photos.",
    "oracle": "**Geometry: oracle.** Every method gets the generator's true identity, expressions, head poses and "
              "cameras (perfect tracking): this measures inversion alone, not what a user's photos give.",
}
PAPER_CITATION = ("Zielonka et al., *Synthetic Prior for Few-Shot Drivable Head Avatar Inversion* (SynShot), "
                  "CVPR 2025, arXiv:2501.06903, table \"Ablation Study: VQ-VAE Architecture\"")
# The paper's ablation table: L1, LPIPS, SSIM, PSNR.
PAPER_ABLATIONS = {
    "full": ("main prior (paper: F = 128, final model)", 0.0356, 0.2686, 0.8189, 20.15),
    "no_sampling": ("No Sampling (one Gaussian per UV texel)", 0.0403, 0.2853, 0.8158, 19.98),
    "no_vq": ("w/o VQ", 0.0396, 0.2747, 0.8122, 19.29),
    "single_layer": ("Single Layer", 0.0369, 0.2702, 0.8177, 19.89),
    "f32": ("F/4 (paper: F = 32 vs 128; ours: 8 vs 32)", 0.0375, 0.2732, 0.8146, 19.70),
}
LABELS = {"psnr_full": "PSNR full ↑", "ssim_full": "SSIM full ↑", "l1_full": "L1 full ↓",
          "psnr_head": "PSNR head ↑", "ssim_head": "SSIM head ↑", "l1_head": "L1 head ↓",
          "lpips_full": "LPIPS full ↓", "id_distance": "ID dist ↓"}
FORMATS = {"psnr_full": "{:.2f}", "psnr_head": "{:.2f}"}


def method_rows(methods) -> list[str]:
    """The report's method rows in order: baselines, full, its training-seed replicates, the oracle row."""
    present = set(methods)
    seeds = sorted((m for m in present if is_train_seed_method(m)), key=train_seed_of)
    order = [m for m in METHOD_ORDER[:-1] if m in present] + seeds
    return order + [ORACLE_METHOD] * (ORACLE_METHOD in present)


def describe(method: str) -> str:
    if is_train_seed_method(method):
        return ("the full method on the main prior retrained with this training seed (same data, config and "
                "inversion settings; `full` is the main prior's own seed): the spread between training seeds")
    return METHOD_DESCRIPTIONS[method]


def _fmt(metric: str, x: float) -> str:
    return FORMATS.get(metric, "{:.4f}").format(x)


def _cell(metric: str, iv: Interval) -> str:
    return f"{_fmt(metric, iv.mean)} [{_fmt(metric, iv.low)}, {_fmt(metric, iv.high)}]"


def per_subject_frames(results: list[MethodResult]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """method -> metric -> subject -> per-frame values averaged over the method's seeds."""
    acc: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        for metric, vals in r.frames.items():
            acc[r.method][metric][r.subject].append(vals)
    return {m: {k: {s: list(np.mean(np.asarray(v), axis=0)) for s, v in subj.items()} for k, subj in ms.items()}
            for m, ms in acc.items()}


def summarise(results: list[MethodResult], replicates: int = DEFAULT_REPLICATES) -> dict:
    frames = per_subject_frames(results)
    metrics = [m for m in LABELS if any(m in frames[k] for k in frames)]
    summary: dict = {"metrics": metrics, "intervals": {}, "paired": {}, "seeds": {}, "fairness": {},
                     "subjects": sorted({r.subject for r in results}), "absent": absent_metrics(set(metrics))}
    for method, by_metric in frames.items():
        summary["intervals"][method] = {k: bootstrap(v, replicates).to_dict() for k, v in by_metric.items()}
    for method in frames:
        base = ("no_prior" if method == "full" else
                "full" if method.startswith("ablation:") or is_train_seed_method(method) else None)
        if base in frames:
            summary["paired"][f"{method} - {base}"] = {
                k: paired_difference(frames[method][k], frames[base][k], replicates=replicates).to_dict()
                for k in metrics if k in frames[method] and k in frames[base]}
    for r in results:
        summary["seeds"].setdefault(r.method, {}).setdefault(str(r.seed), []).append(r.metrics["psnr_full"])
        f = summary["fairness"].setdefault(r.method, {"gaussians": set(), "steps": set()})
        f["gaussians"].add(int(r.details.get("gaussians", 0)))
        steps = r.details.get("steps", r.details.get("stage1_steps", 0) + r.details.get("stage2_steps", 0))
        f["steps"].add(int(steps))
    summary["seeds"] = {m: {s: float(np.mean(v)) for s, v in d.items()} for m, d in summary["seeds"].items()}
    summary["fairness"] = {m: {k: sorted(v) for k, v in d.items()} for m, d in summary["fairness"].items()}
    return summary


def verdict(summary: dict, metrics: tuple[str, ...] = ("psnr_full", "psnr_head", "ssim_full", "l1_full")) -> str:
    """Sentences computed from the paired intervals of full - no_prior ("beats" only if 0 is excluded)."""
    paired = summary["paired"].get("full - no_prior")
    if not paired:
        return "The full method and the no-prior baseline were not both evaluated."
    parts = []
    for i, k in enumerate(k for k in metrics if k in paired):
        d = Interval(**paired[k])
        whom = "the no-prior baseline" if i == 0 else "it"
        parts.append(f"{verdict_word(d, HIGHER_IS_BETTER[k])} {whom} on {LABELS[k][:-2]} "
                     f"(full - no_prior {d.mean:+.3g}, 95 % CI [{d.low:+.3g}, {d.high:+.3g}])")
    n = len(summary["subjects"])
    return (f"On {n} held-out subjects (novel views x novel expressions), the full method " + "; ".join(parts) +
            ". 'beats' / 'loses to': the paired bootstrap interval of full - no_prior excludes 0; "
            "'ties with': it does not.")


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    img = to_uint8(img)
    if img.shape[0] >= size:
        return img
    return np.asarray(Image.fromarray(img).resize((size * img.shape[1] // img.shape[0], size), Image.NEAREST))


def write_grids(results: list[MethodResult], subjects: dict[str, Subject], out: Path, max_frames: int,
                tile: int = 128) -> dict[str, list[str]]:
    """Per subject: first row = the 3 inputs; then per eval frame: ground truth | each method (seed 0)."""
    columns = {}
    for name, subject in subjects.items():
        mine = {}
        for r in results:
            if r.subject == name and r.renders is not None and r.method not in mine:
                mine[r.method] = r
        if not mine:
            continue
        order = [m for m in METHOD_ORDER if m in mine] + sorted(m for m in mine if m not in METHOD_ORDER)
        bg = np.ones(3, dtype=np.float32)[:, None, None]

        def on_white(f):
            return np.transpose(f.rgb.numpy() * f.mask.numpy() + bg * (1 - f.mask.numpy()), (1, 2, 0))

        rows = [[_tile(on_white(f), tile) for f in subject.frames]]
        for i in range(min(max_frames, len(subject.eval_frames))):
            rows.append([_tile(on_white(subject.eval_frames[i]), tile)] +
                        [_tile(mine[m].renders[i], tile) for m in order])
        save_png(out / f"grid_{name}.png", image_grid(rows))
        columns[name] = ["ground truth"] + order
    return columns


def plot_intervals(summary: dict, path: Path, metric: str = "psnr_full") -> Path:
    """PNG: one row per method, the mean as a dot and its 95 % interval as a bar (PIL, no plotting stack)."""
    rows = [(m, Interval(**iv[metric])) for m, iv in summary["intervals"].items() if metric in iv]
    rows.sort(key=lambda r: r[1].mean)
    w, left, right, row_h, top = 820, 280, 30, 34, 40
    h = top + row_h * len(rows) + 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    lo = min(iv.low for _, iv in rows)
    hi = max(iv.high for _, iv in rows)
    pad = max(0.5, 0.05 * (hi - lo))
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> int:
        return int(left + (v - lo) / (hi - lo) * (w - left - right))

    title = f"{LABELS[metric][:-2]} (dB): mean and 95 % bootstrap interval over subjects x frames"
    d.text((10, 10), title, fill="black")  # the label without its arrow: PIL's default font has no glyph
    for i, (m, iv) in enumerate(rows):
        y = top + i * row_h + row_h // 2
        d.text((10, y - 6), m, fill="black")
        d.line([(x(iv.low), y), (x(iv.high), y)], fill=(40, 90, 200), width=3)
        for v in (iv.low, iv.high):
            d.line([(x(v), y - 6), (x(v), y + 6)], fill=(40, 90, 200), width=2)
        d.ellipse([x(iv.mean) - 5, y - 5, x(iv.mean) + 5, y + 5], fill=(200, 40, 40))
        d.text((x(iv.high) + 6, y - 6), f"{iv.mean:.2f}", fill="black")
    axis_y = top + row_h * len(rows) + 10
    d.line([(left, axis_y), (w - right, axis_y)], fill="black")
    step = max(0.5, round((hi - lo) / 6 * 2) / 2)
    t = np.ceil(lo / step) * step
    while t <= hi:
        d.line([(x(t), axis_y), (x(t), axis_y + 5)], fill="black")
        d.text((x(t) - 10, axis_y + 8), f"{t:.1f}", fill="black")
        t += step
    path.parent.mkdir(parents=True, exist_ok=True)
    with fsio.atomic_open(path, "wb") as f:
        img.save(f, format="PNG")
    return path


def _table(summary: dict, methods: list[str], metrics: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(LABELS[k] for k in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for m in methods:
        ivs = summary["intervals"][m]
        lines.append(f"| {m} | " + " | ".join(_cell(k, Interval(**ivs[k])) if k in ivs else "–" for k in metrics)
                     + " |")
    return lines


def readme_summary(summary: dict, split: str) -> str:
    """The compact table + verdict the README carries (copied from here, so its wording is the report's)."""
    keys = [k for k in ("psnr_full", "psnr_head", "ssim_full", "l1_full") if k in summary["metrics"]]
    methods = method_rows(summary["intervals"])
    ablations = sorted(m for m in summary["intervals"] if m.startswith("ablation:"))
    lines = [f"{len(summary['subjects'])} {split} subjects; mean [95 % bootstrap interval over subjects x frames]:",
             ""] + _table(summary, methods + ablations, keys)
    return "\n".join(lines + ["", verdict(summary), ""])


def tracking_table(tracking: dict[str, dict]) -> list[str]:
    """Per subject: tracking error of the tracked geometry against the generator's truth (report only)."""
    lines = ["### Tracking error (tracked vs true geometry, per subject: mean [max] over the 3 input photos)", "",
             "| subject | cues | rotation (deg) | face vertex (mm) | camera distance (%) |", "|---|---|---|---|---|"]
    for name, t in sorted(tracking.items()):
        err = t.get("error")
        if not err:
            lines.append(f"| {name} | – | – (no truth) | – | – |")
            continue
        cues = ", ".join(r["cue"] for r in err["photos"])
        cells = [f"{err['mean'][k]:.2f} [{err['max'][k]:.2f}]" for k in ("rot_err_deg", "face_vertex_err_mm",
                                                                         "cam_dist_err_pct")]
        lines.append(f"| {name} | {cues} | " + " | ".join(cells) + " |")
    return lines + ["", "Rotation: of the head-to-camera transform; face vertices: face-region skin after a similarity "
                        "alignment; camera distance: head-to-camera distance (synshot.bench.track.compare). The "
                        "truth is read only for this table.", ""]


def write_report(results: list[MethodResult], subjects: dict[str, Subject], out: str | Path, config_json: str,
                 max_frames: int = 4, split: str = "test", replicates: int = DEFAULT_REPLICATES,
                 tile: int = 128, geometry: str | None = None, tracking: dict[str, dict] | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(results, replicates)
    summary["geometry"] = geometry
    if tracking:
        summary["tracking"] = {name: t.get("error") and {"mean": t["error"]["mean"], "max": t["error"]["max"]}
                               for name, t in tracking.items()}
    fsio.write_json(out / "metrics.json", summary, sort_keys=True, default=float)
    columns = write_grids(results, subjects, out, max_frames, tile)
    plot = plot_intervals(summary, out / "psnr_intervals.png") if summary["intervals"] else None
    metrics = summary["metrics"]
    methods = method_rows(summary["intervals"])
    n_frames = {iv["n_frames"] for m in summary["intervals"].values() for iv in m.values()}
    seeds = {m: sorted(d) for m, d in summary["seeds"].items()}
    lines = ["# SynShot evaluation report", "",
             f"{len(summary['subjects'])} **{split}** subjects ({', '.join(summary['subjects'])}), 3 input frames "
             f"each; metrics on the held-out frames at novel views x novel expressions, per frame with both images "
             f"clamped to [0, 1], then averaged. `*_full`: the whole frame, render and ground truth on white; "
             f"`*_head`: over the ground-truth head mask only. Each cell: mean over subjects x frames "
             f"({', '.join(map(str, sorted(n_frames)))} values) and its 95 % two-level bootstrap interval "
             f"({replicates} replicates; subjects, then frames within a subject). Seeds per method: "
             + ", ".join(f"{m} {{{', '.join(s)}}}" for m, s in seeds.items() if not m.startswith("ablation:"))
             + " (a method's per-frame values are averaged over its seeds first).", ""]
    if geometry is not None:
        lines += [GEOMETRY_TEXT[geometry], ""]
    if tracking:
        lines += tracking_table(tracking)
    absent = summary["absent"]
    if absent:
        lines += ["**Absent columns:** " + "; ".join(f"`{k}` ({why})" for k, why in absent.items()) + ".", ""]
    lines += ["## Methods", ""] + _table(summary, methods, metrics)
    lines += [""] + [f"- **{m}**: {describe(m)}" for m in methods]
    lines += ["", f"**Verdict:** {verdict(summary)}", ""]
    paired = summary["paired"].get("full - no_prior")
    if paired:
        lines += ["### Paired difference full - no_prior (per frame, same frames)", "",
                  "| metric | mean | 95 % interval | verdict |", "|---|---|---|---|"]
        for k in metrics:
            if k in paired:
                d = Interval(**paired[k])
                lines.append(f"| {LABELS[k]} | {d.mean:+.4f} | [{d.low:+.4f}, {d.high:+.4f}] | "
                             f"full {verdict_word(d, HIGHER_IS_BETTER[k])} no_prior |")
        lines.append("")
    replicas = [m for m in methods if is_train_seed_method(m) and f"{m} - full" in summary["paired"]]
    if replicas:
        lines += ["### Training seeds (the main prior retrained with another seed, inverted with the full method)", "",
                  "| prior | Δ PSNR full vs the main prior, paired | Δ SSIM full |", "|---|---|---|"]
        for m in replicas:
            d = summary["paired"][f"{m} - full"]
            cells = [f"{d[k]['mean']:+.3g} [{d[k]['low']:+.3g}, {d[k]['high']:+.3g}]" if k in d else "–"
                     for k in ("psnr_full", "ssim_full")]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "A difference whose interval excludes 0 means the training seed alone moves the result: read the "
                  "full - no_prior verdict with that spread in mind.", ""]
    if plot is not None:
        lines += [f"![PSNR (full frame) per method with 95 % intervals]({plot.name})", ""]
    lines += ["### Fairness and seeds", "", "| method | Gaussians | optimisation steps | mean PSNR full per seed |",
              "|---|---|---|---|"]
    for m, f in summary["fairness"].items():
        per_seed = ", ".join(f"seed {s}: {v:.2f}" for s, v in sorted(summary["seeds"][m].items()))
        lines.append(f"| {m} | {', '.join(map(str, f['gaussians']))} | {', '.join(map(str, f['steps']))} | "
                     f"{per_seed} |")
    lines.append("")
    ablations = sorted(m for m in summary["intervals"] if m.startswith("ablation:"))
    if ablations and "full" in summary["intervals"]:
        lines += ["## Ablations (priors trained with the same budget and tuned on the same validation subjects, "
                  "inverted with the full method)", "",
                  "| variant | L1 full (ours) | PSNR full (ours) | SSIM full (ours) | Δ PSNR vs main, paired | "
                  "L1 (paper) | LPIPS (paper) | SSIM (paper) | PSNR (paper) |", "|---|---|---|---|---|---|---|---|---|"]
        for key in ["full"] + ablations:
            short = key.split(":", 1)[-1]
            iv = summary["intervals"][key]
            paper = PAPER_ABLATIONS.get(short)
            p = " | ".join(f"{v:.4f}" if i < 3 else f"{v:.2f}" for i, v in enumerate(paper[1:])) if paper else \
                "– | – | – | –"
            diff = summary["paired"].get(f"{key} - full", {}).get("psnr_full")
            dtxt = (f"{diff['mean']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]" if diff else "–")
            ours = " | ".join(_cell(k, Interval(**iv[k])) for k in ("l1_full", "psnr_full", "ssim_full"))
            lines.append(f"| {paper[0] if paper else short} | {ours} | {dtxt} | {p} |")
        lines += ["", f"Paper numbers: {PAPER_CITATION} (512 px, real subjects, a prior trained on ~2,000 synthetic "
                  "identities). Ours: the toy-scale run of this configuration; compare orderings, not values.", ""]
    lines += ["## Per subject", ""]
    by_subject: dict[str, list[MethodResult]] = defaultdict(list)
    for r in results:
        by_subject[r.subject].append(r)
    for s in summary["subjects"]:
        lines += [f"### {s}", "", "| method | seed | " + " | ".join(LABELS[k] for k in metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for r in by_subject[s]:
            m = r.metrics
            lines.append(f"| {r.method} | {r.seed} | " + " | ".join(_fmt(k, m[k]) if k in m else "–" for k in metrics)
                         + " |")
        lines.append("")
        if s in columns:
            lines += [f"![{s}: first row the 3 inputs; then per eval frame: " + " | ".join(columns[s])
                      + f"](grid_{s}.png)", ""]
    lines += ["## Configuration", "", "```json", config_json, "```", ""]
    path = out / "report.md"
    fsio.write_text(path, "\n".join(lines))
    if summary["intervals"]:
        fsio.write_text(out / "readme_summary.md", readme_summary(summary, split))
    return path
