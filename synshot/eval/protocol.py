"""The evaluation protocol: subjects of one split x methods x seeds, per-frame metrics on novel views x
novel expressions.

Methods (all see the same 3 input frames and are scored on the same held-out ``eval/`` frames):
  no_prior     Gaussians bound to the tracked head mesh, fitted from scratch (baseline 1)
  prior_only   the prior's encoder output on the unwrapped inputs, no optimisation (baseline 2)
  stage1_only  pivot search only: E_id optimised, decoders untouched (baseline 3)
  full         stage 1 + stage 2 pivotal tuning (the method)
  ablation:<n> the full method on a prior trained with one of the paper's ablation switches
  full (training seed N)  the full method on the main prior retrained with another training seed
                          (same data and config; the main prior's inversion config): the training-seed spread
``full`` and ``no_prior`` (the compared pair) run once per seed of ``seeds``; the others once.

Geometry (``geometry``): every method gets the same inputs, by default the face tracker's fit to the
subject's 3 input images (synshot.eval.tracked, which also states the alignment rule for the eval
frames); ``oracle_row`` adds the full method on the generator's true geometry as a labelled upper
bound (:data:`ORACLE_METHOD`), which no verdict uses.
Runs are independent, so they execute in a pool of ``workers`` spawned processes (results in job order).
Each (subject, method, seed) result is a folder with ``result.json`` (per-frame metrics and the
digest of everything it depends on) and ``renders.npy``; a result whose digest matches is read,
not recomputed, so an interrupted evaluation resumes and a changed config or prior re-runs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from synshot import fsio
from synshot.cli import get_logger
from synshot.config import dump_config, load_config
from synshot.eval.config import EvalConfig
from synshot.eval.metrics import frame_metrics, mean_over_frames
from synshot.eval.pool import pool_map, pool_size
from synshot.eval.noprior import composite_target, fit_no_prior, render_frames, resolve_budget
from synshot.eval.splits import check_subjects
from synshot.images import batch_to_uint8
from synshot.invert.config import InvertConfig
from synshot.invert.subject import Frame, Subject
from synshot.track.config import TrackConfig

PRIOR_METHOD_OVERRIDES: dict[str, list[str]] = {
    "prior_only": ["stage1.steps=0", "stage2.steps=0", "refine.cameras=false"],
    "stage1_only": ["stage2.steps=0"],
    "full": [],
}
SEEDED_METHODS = ("full", "no_prior")
ORACLE_METHOD = "full (oracle geometry, upper bound)"  # the label of the oracle row, everywhere
ORACLE_FOLDER = "full_oracle"
TRAIN_SEED_VARIANT = "train_seed:"  # + N: a job variant on the main prior retrained with training seed N


TRAIN_SEED_METHOD = "full (training seed {})"


def train_seed_method(seed: int) -> str:
    """The row label of the full method on the main prior retrained with training seed ``seed``."""
    return TRAIN_SEED_METHOD.format(seed)


def train_seed_of(method: str) -> int | None:
    """The training seed of a :func:`train_seed_method` label; None for any other method."""
    head, tail = TRAIN_SEED_METHOD.split("{}")
    inner = method[len(head):-len(tail)] if method.startswith(head) and method.endswith(tail) else ""
    return int(inner) if inner.isdigit() else None


def is_train_seed_method(method: str) -> bool:
    return train_seed_of(method) is not None
# files of a subject folder that report on it and feed nothing (left out of the result digests)
REPORT_ONLY_FILES = ("tracking.json", "tracking.png", "heldout.json", "tracking_error.json")


@dataclass
class MethodResult:
    subject: str
    method: str
    seed: int
    frames: dict[str, list[float]]  # metric -> value per eval frame
    details: dict[str, Any]  # wall time, Gaussian counts, losses
    renders: np.ndarray | None  # (N,H,W,3) uint8 renders of the eval frames
    cached: bool = False  # read from an earlier run's result.json, not computed now

    @property
    def metrics(self) -> dict[str, float]:
        return mean_over_frames(self.frames)


def result_line(r: MethodResult) -> str:
    m = r.metrics
    return (f"{r.subject} {r.method} seed {r.seed}: PSNR full {m['psnr_full']:.2f} / head {m['psnr_head']:.2f} dB, "
            f"SSIM full {m['ssim_full']:.4f} ({r.details['wall_s']:.0f} s)")


def find_subjects(patterns: list[str]) -> list[Path]:
    """Subject folders matching ``patterns`` that have held-out ``eval/`` frames, sorted."""
    found: list[Path] = []
    for pat in patterns:
        matches = sorted(glob.glob(pat)) or ([pat] if Path(pat).exists() else [])
        found += [Path(m) for m in matches if Path(m).is_dir()]
    subjects = [p for p in dict.fromkeys(found) if (p / "eval").is_dir()]
    if not subjects:
        raise FileNotFoundError(f"no subject folder with eval/ frames matches {patterns}; "
                                f"make some with `synshot data subject --seed S --out DIR`")
    return subjects


@lru_cache(maxsize=16)
def file_digest(path: str) -> str:
    """sha256 of a prior file (a re-trained prior invalidates every cached result that used it)."""
    return fsio.file_sha256(path) if Path(path).is_file() else "missing"


def subject_digest(folder: Path) -> str:
    """sha256 of every file a subject folder feeds the inversion and the metrics (by content, so a
    re-tracked subject with the same result keeps its cached results, and a different one does not)."""
    from synshot.eval.tracked import hash_files

    return hash_files(hashlib.sha256(), folder, sorted(q for q in folder.rglob("*") if q.name not in REPORT_ONLY_FILES))


@lru_cache(maxsize=16)
def prior_gaussians(path: str) -> int:
    from synshot.model import load_exported

    model, _ = load_exported(path, map_location="cpu")
    return int(sum(model.gaussian_counts().values()))


def id_distance_pair() -> Callable | None:
    """``synshot.faces.pair_id_distance`` (dlib descriptor) when it and its model files are installed."""
    try:
        from synshot.faces import pair_id_distance
        from synshot.faces.dlib_models import face_descriptor  # noqa: F401 (imports dlib and finds the weights)
    except ImportError:
        return None
    return pair_id_distance


class Evaluator:
    """Runs every method on every subject (and seed) and collects :class:`MethodResult` s."""

    def __init__(self, cfg: EvalConfig, log: Callable[[str], None] | None = None):
        self.cfg, self.log = cfg, log or get_logger("eval").info
        self.out = Path(cfg.out)
        self.tracking: dict[str, dict] = {}  # subject -> tracked folder and tracking error (tracked geometry)
        self.lpips = None
        if cfg.lpips_backbone is not None:
            from synshot.losses import LPIPS

            self.lpips = LPIPS(cfg.lpips_backbone, net=cfg.lpips_net)

    # -- configs ------------------------------------------------------------------------------------
    def invert_config(self, method: str, ckpt: str, seed: int = 0, extra: list[str] = ()) -> InvertConfig:
        overrides = list(self.cfg.invert_overrides) + list(extra) + PRIOR_METHOD_OVERRIDES[method] + [
            f"ckpt={ckpt}", f"seed={seed}", "output.video=false", "output.ply=false", "tensorboard=false",
            "progress=false"]
        return load_config(InvertConfig, self.cfg.invert_config, overrides)

    def result_digest(self, method: str, inv_cfg: InvertConfig, subject_dir: Path | None = None,
                      geometry: str = "oracle") -> str:
        """What a cached result depends on: the method's configs, the prior's bytes, the geometry and the
        content of the subject's files (for tracked geometry: the tracked subject)."""
        if method == "no_prior":  # only what the baseline uses of the inversion config (budget, losses, images)
            keys = ("seed", "device", "backend", "image_size", "background", "weights", "subject", "head_mesh")
            used = {k: v for k, v in inv_cfg.model_dump(mode="json").items() if k in keys}
            used["steps"] = inv_cfg.stage1.steps + inv_cfg.stage2.steps
            inv_part = json.dumps(used, sort_keys=True) + dump_config(self.cfg.no_prior)
            prior = f"gaussians={prior_gaussians(inv_cfg.ckpt)}"  # all the baseline takes from the prior
        else:
            inv_part = dump_config(inv_cfg)
            prior = file_digest(str(Path(inv_cfg.ckpt).resolve()))
        parts = [method, inv_part, prior, str(self.cfg.lpips_backbone), f"id_distance={id_distance_pair() is not None}"]
        parts.append(f"geometry={geometry}")
        if subject_dir is not None:
            parts.append(subject_digest(subject_dir))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def variant(self, name: str) -> tuple[str, str, list[str], str]:
        """(row label, prior, inversion overrides, result folder) of a prior variant run with the full
        method: an ablation prior (its tuned overrides) or ``train_seed:N`` (the main prior retrained with
        training seed N, inverted exactly like the main prior)."""
        if name.startswith(TRAIN_SEED_VARIANT):
            seed = int(name[len(TRAIN_SEED_VARIANT):])
            return train_seed_method(seed), self.cfg.train_seed_priors[seed], [], f"full_train_seed{seed}"
        return f"ablation:{name}", self.cfg.ablations[name], self.ablation_overrides(name), f"ablation_{name}"

    def variants(self) -> list[str]:
        return [*self.cfg.ablations, *(f"{TRAIN_SEED_VARIANT}{s}" for s in self.cfg.train_seed_priors)]

    def ablation_overrides(self, name: str) -> list[str]:
        """The ablation's tuned inversion overrides (config first, else the validation search's best)."""
        if name in self.cfg.ablation_overrides:
            return list(self.cfg.ablation_overrides[name])
        if self.cfg.ablation_tuning is None:
            return []
        path = Path(self.cfg.ablation_tuning)
        try:
            methods = json.loads(path.read_text())["methods"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise FileNotFoundError(f"ablation_tuning {path}: not a tuning.json of synshot.eval.tune ({exc})") from None
        if name not in methods:
            raise FileNotFoundError(f"ablation_tuning {path}: ablation '{name}' was not tuned; run the search for it")
        return list(methods[name]["best_overrides"])

    # -- metrics ------------------------------------------------------------------------------------
    def score(self, pred: torch.Tensor, frames: list[Frame], background, head=None) -> dict[str, list[float]]:
        bg = torch.tensor(background, dtype=torch.float32)
        target = torch.stack([composite_target(f, bg) for f in frames])
        mask = torch.stack([f.mask for f in frames])
        return frame_metrics(pred, target, mask, lpips=self.lpips, id_distance=self.id_distance(head, frames))

    def id_distance(self, head, frames: list[Frame]) -> Callable | None:
        """Per-frame face-descriptor distance in the ground truth's projected face box (always defined),
        when the face-descriptor module and its weights are installed; None = the column is absent."""
        pair = id_distance_pair()
        if pair is None or head is None:
            return None
        from synshot.invert.arcface import square_boxes
        from synshot.camera import pose_points, project_points

        boxes = square_boxes([project_points(pose_points(head.face_points(f.expression), f.head_pose), f.K, f.w2c)[0]
                              for f in frames])
        return lambda pred, target: torch.tensor([pair(pred[k], target[k], boxes[k].tolist())
                                                  for k in range(len(pred))])

    # -- one (subject, method, seed) ----------------------------------------------------------------
    def run_one(self, subject_dir: Path, method: str, seed: int = 0, variant: str | None = None,
                geometry: str | None = None, cached_only: bool = False) -> MethodResult | None:
        """One result; ``subject_dir`` is the folder holding the geometry (a tracked subject, or the
        held-out subject itself for ``geometry="oracle"``). ``variant``: another prior, run with the full
        method (:meth:`variant`). The full method on the oracle geometry while the evaluation runs on
        tracked geometry is the oracle row (:data:`ORACLE_METHOD`).
        ``cached_only``: None instead of computing a result that is not cached."""
        geometry = geometry or self.cfg.geometry
        oracle_row = geometry == "oracle" and self.cfg.geometry != "oracle"
        if oracle_row and (method != "full" or variant is not None):
            raise ValueError("the oracle row is the full method only")
        # tracked geometry: an eval frame the tracked head misses is the measured tracking error, not a bad file
        extra = ["subject.check_eval_cameras=false"] if geometry == "tracked" else []
        if variant is not None:
            name, prior, overrides, folder_name = self.variant(variant)
            inv_cfg = self.invert_config("full", prior, seed, overrides + extra)
        else:
            name = ORACLE_METHOD if oracle_row else method
            folder_name = ORACLE_FOLDER if oracle_row else method
            inv_cfg = self.invert_config("full" if method == "no_prior" else method, self.cfg.prior, seed, extra)
        folder = self.out / subject_dir.name / folder_name / f"seed{seed}"
        result_file = folder / "result.json"
        digest = self.result_digest(name, inv_cfg, subject_dir, geometry)
        if self.cfg.reuse and result_file.is_file() and (folder / "renders.npy").is_file():
            try:
                data = json.loads(result_file.read_text())
            except json.JSONDecodeError:
                data = {}
            if data.get("digest") == digest:
                return MethodResult(subject_dir.name, name, seed, data["frames"], data["details"],
                                    np.load(folder / "renders.npy"), cached=True)
        if cached_only:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        from synshot.invert.run import prepare_subject

        subject, head = prepare_subject(inv_cfg, subject_dir)
        frames = subject.eval_frames
        if method == "no_prior":
            np_cfg = resolve_budget(self.cfg.no_prior.model_copy(update={"seed": seed}), head,
                                    prior_gaussians(inv_cfg.ckpt), inv_cfg.stage1.steps + inv_cfg.stage2.steps)
            model, fit = fit_no_prior(head, subject.frames, np_cfg, inv_cfg.weights, inv_cfg.background,
                                      inv_cfg.backend, log=self.log)
            pred = render_frames(model, frames, inv_cfg.background, inv_cfg.backend)
            details = {"gaussians": fit["gaussians"], "prior_gaussians": prior_gaussians(inv_cfg.ckpt),
                       "steps": fit["steps"], "grid_size": fit["grid_size"], "loss_first": fit["loss_first"],
                       "loss_final": fit["loss_final"]}
        else:
            pred, details = self._invert(inv_cfg, subject_dir, folder)
            details["gaussians"] = prior_gaussians(inv_cfg.ckpt)
        per_frame = self.score(pred, frames, inv_cfg.background, head)
        details["wall_s"] = time.perf_counter() - start
        renders = batch_to_uint8(pred)
        with fsio.atomic_open(folder / "renders.npy", "wb") as f:
            np.save(f, renders)
        # result.json last: its presence (with the digest) is what marks the result finished
        details["geometry"] = geometry
        fsio.write_json(result_file, {"subject": subject_dir.name, "method": name, "seed": seed, "frames": per_frame,
                                      "details": details, "digest": digest}, indent=1, default=float)
        return MethodResult(subject_dir.name, name, seed, per_frame, details, renders)

    def log_result(self, r: MethodResult) -> None:
        """One line per computed result (the evaluation's progress; cached results are silent)."""
        self.log(result_line(r))

    def _invert(self, inv_cfg: InvertConfig, subject_dir: Path, folder: Path) -> tuple[torch.Tensor, dict]:
        """Invert from the subject's input frames only, then render the eval frames from the avatar."""
        from synshot.invert.avatar import load_avatar
        from synshot.invert.run import prepare_subject, run_inversion

        inv_metrics = run_inversion(inv_cfg, subject_dir, folder / "invert", log=self.log)
        avatar = load_avatar(folder / "invert" / "avatar.safetensors")
        frames = prepare_subject(inv_cfg, subject_dir)[0].eval_frames
        pred, _ = avatar.render(torch.stack([f.expression for f in frames]), torch.stack([f.head_pose for f in frames]),
                                torch.stack([f.K for f in frames]), torch.stack([f.w2c for f in frames]),
                                frames[0].height, frames[0].width, background=tuple(inv_cfg.background),
                                backend=inv_cfg.backend)
        keep = ("loss_first", "loss_final", "stage1_s", "stage2_s", "inputs_l1", "stage1_steps", "stage2_steps")
        # no steps (prior_only) leave the losses NaN; result.json is strict JSON, so they are left out
        return pred.cpu(), {k: inv_metrics[k] for k in keep if k in inv_metrics and inv_metrics[k] == inv_metrics[k]}

    # -- everything ---------------------------------------------------------------------------------
    def jobs(self, subjects: list[Path], geometry: dict[str, Path] | None = None) -> list[tuple]:
        """(geometry folder, method, seed, variant, geometry kind) in run order: subject by subject, so a
        partial run is whole. ``geometry`` maps a subject name to its tracked folder (tracked geometry)."""
        out = []
        kind = self.cfg.geometry
        for sdir in subjects:
            gdir = (geometry or {}).get(sdir.name, sdir)
            for method in self.cfg.methods:
                seeds = self.cfg.seeds if method in SEEDED_METHODS else self.cfg.seeds[:1]
                out += [(gdir, method, s, None, kind) for s in seeds]
            out += [(gdir, "full", self.cfg.seeds[0], v, kind) for v in self.variants()]
            if self.cfg.oracle_row and kind == "tracked":
                out.append((sdir, "full", self.cfg.seeds[0], None, "oracle"))
        return out

    def tracked_dir(self, subject: Path) -> Path:
        from synshot.eval.tracked import default_tracked_dir

        return Path(self.cfg.tracked_dir) if self.cfg.tracked_dir else default_tracked_dir(subject)

    def workers(self, n_jobs: int) -> tuple[int, int]:
        """(processes, torch threads per process)."""
        return pool_size(self.cfg.workers, n_jobs, self.cfg.threads_per_worker)

    def track(self, subjects: list[Path]) -> dict[str, Path]:
        """Tracked folder of each subject (tracked in parallel; cached ones are reused)."""
        from synshot.eval.tracked import read_tracking_error, track_all

        track_cfg = load_config(TrackConfig, self.cfg.track_config, self.cfg.track_overrides)
        done = track_all(subjects, [self.tracked_dir(s) for s in subjects], track_cfg, self.cfg.workers,
                         self.cfg.threads_per_worker)
        self.tracking = {s.name: {"dir": str(d), "error": read_tracking_error(d)} for s, d in zip(subjects, done)}
        return {s.name: d for s, d in zip(subjects, done)}

    def _map(self, fn: Callable, tasks: list, workers: int, threads: int,
             on_result: Callable[[Any], None] = lambda _: None) -> list:
        """``fn`` over ``tasks`` (synshot.eval.pool; one Evaluator per worker); in this process when
        workers == 1, with ``threads_per_worker`` torch threads when it is set."""
        if workers > 1:
            return pool_map(fn, tasks, workers, threads, _init_worker, (self.cfg,), on_result)
        before = torch.get_num_threads()
        if self.cfg.threads_per_worker:
            torch.set_num_threads(threads)
        try:
            _init_worker(self.cfg, self)
            out = []
            for t in tasks:
                out.append(fn(t))
                on_result(out[-1])
            return out
        finally:
            torch.set_num_threads(before)

    def subjects(self) -> list[Path]:
        """The split's subject folders (checked against the splits), once the variant priors are found."""
        priors = {**{f"ablation '{a}'": p for a, p in self.cfg.ablations.items()},
                  **{f"train_seed_priors[{s}]": p for s, p in self.cfg.train_seed_priors.items()}}
        for what, ckpt in priors.items():
            if not Path(ckpt).is_file():
                raise FileNotFoundError(f"{what}: prior {ckpt} not found; train and export it (make eval trains "
                                        f"it) or remove it from the evaluation config")
        subjects = find_subjects(self.cfg.subjects)
        check_subjects(self.cfg.split, subjects, self.cfg.train_identities)
        return subjects

    def plan(self) -> tuple[list[Path], dict[str, Path], list[tuple], list[MethodResult | None]]:
        """(subjects, tracked folders, jobs, each job's cached result or None): what is left to compute."""
        subjects = self.subjects()
        self.tracking = {}
        geometry = self.track(subjects) if self.cfg.geometry == "tracked" else {}
        jobs = self.jobs(subjects, geometry)
        return subjects, geometry, jobs, [self.run_one(*job, cached_only=True) for job in jobs]

    def run(self) -> tuple[list[MethodResult], dict[str, Subject]]:
        subjects, geometry, jobs, results = self.plan()  # cached results need no worker
        todo = [job for job, r in zip(jobs, results) if r is None]
        workers, threads = self.workers(len(todo))
        self.log(f"{len(subjects)} {self.cfg.split} subjects on {self.cfg.geometry} geometry, {len(jobs)} runs, "
                 f"{len(todo)} to compute (methods {self.cfg.methods}, seeds {self.cfg.seeds}, ablations "
                 f"{sorted(self.cfg.ablations)}, training seeds {sorted(self.cfg.train_seed_priors)}"
                 f"{', oracle row' if any(j[4] == 'oracle' and self.cfg.geometry == 'tracked' for j in jobs) else ''}"
                 f"; {workers} workers x {threads} threads) -> {self.out}")
        computed = iter(self._map(_run_task, todo, workers, threads, on_result=self.log_result) if todo else [])
        results = [r if r is not None else next(computed) for r in results]
        from synshot.invert.run import prepare_subject

        grid_cfg = self.invert_config("full", self.cfg.prior, extra=["subject.check_eval_cameras=false"])
        loaded = {s.name: prepare_subject(grid_cfg, geometry.get(s.name, s))[0] for s in subjects}
        return results, loaded


def compute_uncached(evaluators: list[Evaluator], log: Callable[[str], None] | None = None) -> int:
    """Compute every uncached run of several evaluations in one process pool; returns how many ran.

    A search's trials are independent evaluations. Run one after the other, each trial's pool waits
    for its last subject (3 subjects on 2 workers keep one worker idle a third of the time); pooled
    together, no worker waits. Each evaluation's own ``run()`` then reads its results from the cache.
    """
    if not evaluators:
        return 0
    log = log or evaluators[0].log
    tasks = []
    for ev in evaluators:
        _, _, jobs, cached = ev.plan()
        tasks += [(ev.cfg, job) for job, r in zip(jobs, cached) if r is None]
    if not tasks:
        return 0
    first = evaluators[0]
    workers, threads = first.workers(len(tasks))
    log(f"{len(tasks)} runs of {len(evaluators)} evaluations to compute ({workers} workers x {threads} threads)")
    first._map(_run_config_task, tasks, workers, threads, on_result=lambda r: log(result_line(r)))
    return len(tasks)


# -- the process pool: one Evaluator per worker process -------------------------------------------------
_WORKER: Evaluator | None = None
_EVALUATORS: dict[str, Evaluator] = {}  # per evaluation config, for pools that mix evaluations


def _init_worker(cfg: EvalConfig, evaluator: Evaluator | None = None) -> None:
    global _WORKER
    _WORKER = evaluator or Evaluator(cfg)


def _run_task(job: tuple) -> MethodResult:
    return _WORKER.run_one(*job)


def _run_config_task(task: tuple) -> MethodResult:
    cfg, job = task
    key = dump_config(cfg)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(cfg)
    return _EVALUATORS[key].run_one(*job)
