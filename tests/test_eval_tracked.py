"""Evaluation on tracked geometry: the held-out subject's truth never reaches the tracker, tracked
subjects are cached by their inputs, every method gets the same tracked inputs, the oracle row is
labelled and stays out of the verdict, and a process pool gives the same metrics as one process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synshot.config import load_config
from synshot.eval.protocol import ORACLE_METHOD, MethodResult

slow = pytest.mark.slow
FAST_TRACK = ["fit.pose_steps=30", "fit.shape_steps=40", "fit.expression_steps=40", "silhouette.steps=30"]
FAST_INVERT = ["image_size=32", "head_mesh=tiny", "stage1.steps=2", "stage2.steps=2"]


def _track_cfg(*extra: str):
    from synshot.track.config import TrackConfig

    return load_config(TrackConfig, "configs/track/default.yaml", FAST_TRACK + list(extra))


def _fake_subject(root: Path) -> Path:
    for folder in ("images", "masks", "eval/images"):
        (root / folder).mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(root / "images" / f"00{k}.png")
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(root / "masks" / f"00{k}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "eval" / "images" / "000.png")
    (root / "cameras.json").write_text('{"frames": []}')
    (root / "params.json").write_text('{"frames": []}')
    return root


def test_tracking_cache_digest_is_the_inputs_and_the_config(tmp_path):
    from synshot.eval.tracked import default_tracked_dir, input_digest

    subject = _fake_subject(tmp_path / "subjects" / "s3001")
    cfg = _track_cfg()
    base = input_digest(subject, cfg)
    # what the tracker never sees does not matter
    (subject / "cameras.json").write_text("garbage")
    (subject / "params.json").unlink()
    (subject / "eval" / "images" / "000.png").write_bytes(b"other")
    assert input_digest(subject, cfg) == base
    # a changed mask or a changed track config is a different tracked subject
    assert input_digest(subject, _track_cfg("fit.shape_steps=41")) != base
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(subject / "masks" / "001.png")
    assert input_digest(subject, cfg) != base
    assert default_tracked_dir(subject) == (tmp_path / "tracked").resolve()
    # so is a rebuilt landmark correction file (same path, same config)
    from synshot.track.landmark_correction import SHIPPED

    correction = tmp_path / "correction.npz"
    correction.write_bytes(SHIPPED.read_bytes())
    with_file = _track_cfg(f"detect.correction_file={correction}")
    before = input_digest(subject, with_file)
    correction.write_bytes(SHIPPED.read_bytes() + b"\0")
    assert input_digest(subject, with_file) != before
    # and a retrained landmark predictor, when it is the correction in use
    predictor = tmp_path / "predictor.dat"
    predictor.write_bytes(b"one")
    with_predictor = _track_cfg("detect.correction=shape_predictor", f"detect.predictor_file={predictor}")
    before = input_digest(subject, with_predictor)
    predictor.write_bytes(b"two")
    assert input_digest(subject, with_predictor) != before
    # and its training record, whose box map places the boxes of turned faces when they are read
    predictor.with_suffix(".json").write_text('{"box_from_points": 1}')
    turned = _track_cfg("detect.correction=shape_predictor", f"detect.predictor_file={predictor}",
                        "turned_faces.enabled=true")
    before, without = input_digest(subject, turned), input_digest(subject, with_predictor)
    predictor.with_suffix(".json").write_text('{"box_from_points": 2}')
    assert input_digest(subject, turned) != before
    assert input_digest(subject, with_predictor) == without        # not read without turned faces


def _results() -> list[MethodResult]:
    rng = np.random.default_rng(0)
    out = []
    for s in ("s3001", "s3002", "s3003"):
        base = rng.normal(18, 1, 4)
        for method, shift in (("no_prior", 0.0), ("full", 0.05), (ORACLE_METHOD, 3.0)):
            vals = {k: list(base + shift + rng.normal(0, 0.05, 4)) for k in ("psnr_full", "psnr_head")}
            vals.update({k: list(np.full(4, 0.9)) for k in ("ssim_full", "ssim_head")})
            vals.update({k: list(np.full(4, 0.05)) for k in ("l1_full", "l1_head")})
            out.append(MethodResult(s, method, 0, vals, {"gaussians": 100, "steps": 90}, None))
    return out


def test_oracle_row_is_labelled_and_never_in_the_verdict(tmp_path):
    from synshot.eval.report import summarise, verdict, write_report

    tracking = {"s3001": {"error": {"photos": [{"cue": "landmarks"}] * 2 + [{"cue": "silhouette"}],
                                    "mean": {"rot_err_deg": 2.5, "face_vertex_err_mm": 1.25, "cam_dist_err_pct": 4.0},
                                    "max": {"rot_err_deg": 5.0, "face_vertex_err_mm": 2.0, "cam_dist_err_pct": 8.0}}},
                "s3002": {"error": None}}
    text = write_report(_results(), {}, tmp_path, "{}", replicates=200, geometry="tracked",
                        tracking=tracking).read_text()
    assert f"| {ORACLE_METHOD} |" in text and "upper bound" in text
    assert "Geometry: tracked" in text and "w2c @ head_pose" in text
    assert "| s3001 | landmarks, landmarks, silhouette | 2.50 [5.00] | 1.25 [2.00] | 4.00 [8.00] |" in text
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["geometry"] == "tracked" and data["tracking"]["s3001"]["mean"]["rot_err_deg"] == 2.5
    assert set(data["paired"]) == {"full - no_prior"}  # the oracle is compared with nothing
    results = _results()
    with_oracle = summarise(results, 200)
    without = summarise([r for r in results if r.method != ORACLE_METHOD], 200)
    assert verdict(with_oracle) == verdict(without) and ORACLE_METHOD not in verdict(with_oracle)
    assert ORACLE_METHOD in (tmp_path / "readme_summary.md").read_text()


def test_every_method_gets_the_tracked_inputs_and_tuning_runs_on_them(tmp_path):
    from synshot.eval.config import EvalConfig
    from synshot.eval.protocol import Evaluator
    from synshot.eval.tune import TuneConfig, eval_config_for

    cfg = load_config(EvalConfig, "configs/eval/tiny.yaml", ["seeds=[0,1]", "ablations={no_vq: x.safetensors}",
                                                             "train_seed_priors={1: y.safetensors}"])
    assert cfg.geometry == "tracked" and cfg.oracle_row
    held, tracked = Path("subjects/s3001"), Path("tracked/s3001")
    jobs = Evaluator(cfg).jobs([held], {"s3001": tracked})
    oracle = [j for j in jobs if j[4] == "oracle"]
    assert len(oracle) == 1 and oracle[0][:2] == (held, "full")
    assert {j[0] for j in jobs if j[4] != "oracle"} == {tracked}
    assert {j[1] for j in jobs} == {"no_prior", "prior_only", "stage1_only", "full"}
    assert {j[3] for j in jobs} == {None, "no_vq", "train_seed:1"}
    label, prior, overrides, folder = Evaluator(cfg).variant("train_seed:1")
    assert (label, prior, overrides, folder) == ("full (training seed 1)", "y.safetensors", [], "full_train_seed1")
    tune = load_config(TuneConfig, "configs/eval/tune_tiny.yaml", [f"out={tmp_path}"])
    for method in ("full", "no_prior"):
        ecfg = eval_config_for(tune, method, {}, tmp_path / "t")
        assert ecfg.geometry == "tracked" and not ecfg.oracle_row and ecfg.split == "validation"


# -- real tracking ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """A test subject large enough for the face detector (96 px), with 2 eval frames."""
    from data_tools.subject import make_subject

    root = tmp_path_factory.mktemp("heldout")
    return make_subject(3001, root / "subjects" / "s3001", size=96, spp=2, eval_views=1, eval_expressions=2,
                        tiny_head=True)


@pytest.fixture(scope="module")
def tracked(held_out) -> Path:
    from synshot.eval.tracked import track_heldout

    return track_heldout(held_out, held_out.parent.parent / "tracked", _track_cfg())


def _bytes(folder: Path, names: list[str]) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names}


@slow
def test_tracker_never_reads_the_held_out_geometry(held_out, tracked, tmp_path):
    """Changing the held-out cameras.json/params.json changes nothing the tracker fits: they are read only after
    tracking, to align the eval frames (synshot.eval.align), and never reach the tracked inputs."""
    from synshot.eval.tracked import ALIGNMENT_FILE, STAMP, track_heldout

    moved = tmp_path / "subjects" / held_out.name
    shutil.copytree(held_out, moved)
    cams = json.loads((moved / "cameras.json").read_text())
    for f in cams["frames"]:  # every recorded camera 5 cm farther back: a different but valid truth
        f["w2c"][2][3] += 0.05
    (moved / "cameras.json").write_text(json.dumps(cams))
    again = track_heldout(moved, tmp_path / "tracked", _track_cfg())
    names = ["cameras.json", "params.json"] + [f"{d}/{p.name}" for d in ("images", "masks")
                                               for p in sorted((tracked / d).iterdir())]
    assert _bytes(again, names) == _bytes(tracked, names)
    # eval images, masks and the split's seed are carried over unchanged; eval cameras are re-expressed
    for name in ["meta.json"] + [str(p.relative_to(held_out)) for d in ("images", "masks")
                                 for p in (held_out / "eval" / d).rglob("*") if p.is_file()]:
        assert (tracked / name).read_bytes() == (held_out / name).read_bytes()
    a1, a2 = (json.loads((d / ALIGNMENT_FILE).read_text()) for d in (tracked, again))
    assert a1["scale"] != pytest.approx(a2["scale"])  # the recorded input cameras set the alignment
    assert (tracked / "eval" / "cameras.json").read_bytes() != (again / "eval" / "cameras.json").read_bytes()
    err = json.loads((tracked / "tracking_error.json").read_text())
    assert len(err["photos"]) == 3 and np.isfinite(err["mean"]["rot_err_deg"])
    assert json.loads((again / STAMP).read_text())["input_digest"] == json.loads((tracked / STAMP).read_text())[
        "input_digest"]


@slow
def test_tracked_subject_is_reused_until_its_inputs_change(held_out, tracked):
    from synshot.eval.tracked import STAMP, input_digest, is_current, track_heldout

    stamp = (tracked / STAMP).stat().st_mtime_ns
    assert track_heldout(held_out, tracked.parent, _track_cfg()) == tracked
    assert (tracked / STAMP).stat().st_mtime_ns == stamp  # reused, not re-tracked
    assert not is_current(tracked, input_digest(held_out, _track_cfg("fit.shape_steps=41")))


@slow
def test_changed_eval_files_realign_without_retracking(held_out, tracked, tmp_path, monkeypatch):
    """A changed carried-over file (meta.json, eval/) re-derives the tracked folder from the cached fit."""
    from synshot.eval.tracked import track_heldout

    subject, cached = tmp_path / "subjects" / held_out.name, tmp_path / "tracked" / held_out.name
    shutil.copytree(held_out, subject)
    shutil.copytree(tracked, cached)
    meta = json.loads((subject / "meta.json").read_text())
    (subject / "meta.json").write_text(json.dumps({**meta, "note": "re-rendered"}))

    def no_tracking(*_a, **_k):
        raise AssertionError("re-tracked although images, masks and the track config are unchanged")

    monkeypatch.setattr("synshot.track.api.track_subject", no_tracking)
    out = track_heldout(subject, tmp_path / "tracked", _track_cfg())
    assert json.loads((out / "meta.json").read_text())["note"] == "re-rendered"
    assert (out / "params.json").read_bytes() == (tracked / "params.json").read_bytes()
    assert (out / "eval" / "cameras.json").read_bytes() == (tracked / "eval" / "cameras.json").read_bytes()


@slow
def test_parallel_evaluation_matches_one_process(held_out, tracked, prior_path, tmp_path):
    """workers=2 (spawned processes) and workers=1 give identical per-frame metrics; the oracle row runs
    on the held-out subject's own geometry, every other method on the tracked one."""
    from synshot.eval.config import EvalConfig
    from synshot.eval.protocol import Evaluator

    prior = prior_path
    runs = {}
    for workers in (1, 2):
        cfg = load_config(EvalConfig, "configs/eval/tiny.yaml", [
            f"subjects=[{held_out}]", f"prior={prior}", f"out={tmp_path / f'w{workers}'}", "methods=[no_prior,full]",
            "invert_overrides=" + json.dumps(FAST_INVERT), "track_overrides=" + json.dumps(FAST_TRACK),
            f"workers={workers}", "threads_per_worker=1", "bootstrap_replicates=100"])
        evaluator = Evaluator(cfg, log=lambda *_: None)
        results, _ = evaluator.run()
        assert evaluator.tracking["s3001"]["dir"] == str(tracked)  # the cached tracked subject
        runs[workers] = results
    assert [r.method for r in runs[2]] == ["no_prior", "full", ORACLE_METHOD]
    assert {r.details["geometry"] for r in runs[2]} == {"tracked", "oracle"}
    for a, b in zip(runs[1], runs[2]):
        assert (a.subject, a.method, a.seed) == (b.subject, b.method, b.seed)
        assert a.frames == b.frames and np.array_equal(a.renders, b.renders)


def test_eval_frames_a_tracked_head_misses_are_scored_not_refused(subject_dir, tmp_path):
    """On tracked geometry an eval camera that misses the head's mask is tracking error to measure;
    everywhere else it is a bad file (subject.check_eval_cameras)."""
    from synshot.invert.config import InvertConfig
    from synshot.invert.run import prepare_subject
    from synshot.invert.subject import SubjectError

    subject = tmp_path / subject_dir.name
    shutil.copytree(subject_dir, subject)
    cams = json.loads((subject / "eval" / "cameras.json").read_text())
    for f in cams["frames"]:  # the head slides half a head-width sideways in every eval frame
        f["w2c"][0][3] += 0.08
    (subject / "eval" / "cameras.json").write_text(json.dumps(cams))
    base = ["head_mesh=tiny", "image_size=32"]
    with pytest.raises(SubjectError, match="eval/cameras.json"):
        prepare_subject(load_config(InvertConfig, "configs/invert/tiny.yaml", base), subject)
    loaded, _ = prepare_subject(load_config(InvertConfig, "configs/invert/tiny.yaml",
                                            base + ["subject.check_eval_cameras=false"]), subject)
    assert len(loaded.eval_frames) == len(cams["frames"])
