"""The 68 iBUG 300-W landmarks on the head model, defined once in the face UV chart.

Why UV: the face chart is resolution independent (docs/head.md), so one table of 68 (u, v) points
serves every ``HeadConfig``; per config each point becomes a triangle and barycentric weights on the
mesh, and its 3D position follows identity and expression like the skin does.

Why a sliding jaw: points 0-16 (the jaw line) are where the face outline is in the image, which is
a different piece of skin for every head pose. The jaw is therefore a set of candidate *bands*:
curves of face skin from the front of the face to its side, each cut by a plane through the head's
forward axis. At fit time each band's contour vertex (its point farthest out along the band's
direction in the image) is found, and each detected jaw landmark snaps to the nearest contour vertex of the bands
around its nominal one (:meth:`LandmarkEmbedding.contour`, :meth:`LandmarkEmbedding.snap_jaw`).

The table was measured, not guessed: ``synshot head landmarks --calibrate`` renders subjects the
way held-out subjects are rendered (``data_tools.subject``, tiny head, 256 px) but from identity
seeds 101-108 (never validation or test seeds), runs dlib's 68-point predictor on the two
near-frontal photos, back-projects each detected point onto the rendered mesh and takes the median
UV position. (An earlier table measured on plain training identities at 384 px placed the mouth
~6% of the face size too high relative to where dlib puts it on such renders, which the fit paid
for with ~5 degrees of pitch.) The jaw's nominal points are kept from that table: they slide. The figure in docs/tracking.md comes from
``synshot head landmarks --out docs/img/landmarks.png``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from pydantic import Field

from synshot.cli import Command, get_logger
from synshot.config import ConfigBase

from synshot.head.template import PART, REGION

N_LANDMARKS = 68
JAW = tuple(range(0, 17))
INNER = tuple(range(17, 68))
# iBUG 68: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67
GROUPS: dict[str, tuple[int, ...]] = {
    "jaw": JAW, "brow_r": tuple(range(17, 22)), "brow_l": tuple(range(22, 27)), "nose": tuple(range(27, 36)),
    "eye_r": tuple(range(36, 42)), "eye_l": tuple(range(42, 48)), "lips_outer": tuple(range(48, 60)),
    "lips_inner": tuple(range(60, 68)),
}
JAW_BANDS_PER_GAP = 2  # bands between two nominal jaw points (finer contour)

def _mirror_permutation() -> np.ndarray:
    """iBUG index of each landmark's left/right mirror image."""
    perm = np.arange(N_LANDMARKS)
    pairs = [(i, 16 - i) for i in range(8)] + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34),
                                                (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54),
                                                (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


MIRROR = _mirror_permutation()


def symmetrize_uv(uv: np.ndarray) -> np.ndarray:
    """Average each point with its mirror image across the face chart's vertical midline (the template
    is left/right symmetric; the detector's noise is not)."""
    from synshot.head.template import ATLAS

    u0, _, u1, _ = ATLAS["face"]
    mirrored = uv[MIRROR].copy()
    mirrored[:, 0] = (u0 + u1) - mirrored[:, 0]
    return (uv + mirrored) / 2


# (u, v) in the atlas (face island) of each landmark as measured by --calibrate (see the module
# docstring); used symmetrized (LANDMARK_UV).
MEASURED_UV = np.array([
    [0.07374, 0.06914], [0.06670, 0.11756], [0.06537, 0.15558], [0.08450, 0.20187],
    [0.07649, 0.28406], [0.10783, 0.35852], [0.12931, 0.42331], [0.21146, 0.47596],
    [0.29491, 0.48672], [0.39151, 0.46395], [0.43174, 0.40253], [0.46450, 0.34143],
    [0.48197, 0.27420], [0.48531, 0.21706], [0.49408, 0.15714], [0.48440, 0.12652],
    [0.47004, 0.10921], [0.11031, 0.11433], [0.13674, 0.09486], [0.17511, 0.10118],
    [0.21501, 0.10802], [0.25388, 0.12086], [0.30417, 0.11997], [0.33912, 0.10805],
    [0.37897, 0.09913], [0.41890, 0.09419], [0.43964, 0.11357], [0.28002, 0.15683],
    [0.28135, 0.18053], [0.28296, 0.20008], [0.28292, 0.22130], [0.23903, 0.24476],
    [0.26018, 0.24883], [0.28421, 0.25385], [0.30437, 0.24897], [0.32217, 0.24431],
    [0.15437, 0.15464], [0.17341, 0.14613], [0.19992, 0.14959], [0.22613, 0.16558],
    [0.20006, 0.16733], [0.17598, 0.16557], [0.32444, 0.16456], [0.35635, 0.14761],
    [0.38203, 0.14545], [0.40210, 0.15227], [0.38232, 0.16421], [0.35608, 0.16680],
    [0.19409, 0.31951], [0.22693, 0.30653], [0.25897, 0.29137], [0.27944, 0.29726],
    [0.29919, 0.29074], [0.33131, 0.30240], [0.35974, 0.32022], [0.33817, 0.33568],
    [0.30596, 0.34532], [0.28083, 0.34579], [0.25819, 0.34672], [0.22127, 0.33620],
    [0.21460, 0.31571], [0.25686, 0.30948], [0.27776, 0.31129], [0.29843, 0.30792],
    [0.34586, 0.31673], [0.29826, 0.32268], [0.28087, 0.32309], [0.26092, 0.32241],
], dtype=np.float64)
LANDMARK_UV = symmetrize_uv(MEASURED_UV)


def _point_in_triangles(p: np.ndarray, tri2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of 2D triangles (F,3,2) containing point p (2,) and their barycentric weights (k,3)."""
    a, b, c = tri2d[:, 0], tri2d[:, 1], tri2d[:, 2]
    v0, v1, v2 = b - a, c - a, p[None] - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = np.abs(den) > 1e-18
    den = np.where(ok, den, 1.0)
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    w0 = 1 - w1 - w2
    eps = -1e-9
    inside = ok & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    idx = np.nonzero(inside)[0]
    return idx, np.stack([w0[idx], w1[idx], w2[idx]], -1)


def face_triangles(template) -> np.ndarray:
    """Indices of the face-region skin triangles (all three corners on face skin)."""
    reg, part = template.region[template.faces], template.part[template.faces]
    return np.nonzero(((reg == REGION["face"]) & (part == PART["skin"])).all(1))[0]


@dataclass
class LandmarkEmbedding:
    """The landmarks of one HeadConfig: triangles, barycentrics, jaw bands (vertex indices)."""

    tri: np.ndarray          # (68,) triangle index
    bary: np.ndarray         # (68, 3)
    faces: np.ndarray        # (68, 3) vertex indices of each landmark's triangle
    bands: list[np.ndarray]  # jaw bands, ordered from point 0 (subject's right ear) to 16
    band_dirs: np.ndarray    # (B, 3) head-frame outward direction of each band (its plane's in-face axis)
    band_of_jaw: np.ndarray  # (17,) nominal band index of each jaw point

    @property
    def vertex_ids(self) -> np.ndarray:
        """Every vertex the landmark points and bands need (for evaluating a vertex subset)."""
        ids = [self.faces.reshape(-1)] + list(self.bands)
        return np.unique(np.concatenate(ids))

    def points(self, verts: torch.Tensor) -> torch.Tensor:
        """(68, 3) fixed landmark positions (the jaw ones at their nominal place) from (V, 3) vertices."""
        f = torch.as_tensor(self.faces, device=verts.device)
        w = torch.as_tensor(self.bary, dtype=verts.dtype, device=verts.device)
        return (verts[f] * w[..., None]).sum(1)

    def contour(self, verts_px: torch.Tensor, rotation: torch.Tensor, bands: list | None = None) -> torch.Tensor:
        """(B, 2) contour vertex of each band: its projected vertex farthest along the band's outward
        direction as seen by the camera (``rotation``: head -> camera). ``bands`` re-indexes the bands
        when ``verts_px`` holds a vertex subset (a list, or its :func:`padded_bands`). Batched:
        ``verts_px`` (N, V, 2) and ``rotation`` (N, 3, 3) give (N, B, 2)."""
        if bands is None:
            bands = self.__dict__.setdefault("_band_matrix", padded_bands(self.bands))
        idx, valid = bands if isinstance(bands, tuple) else padded_bands(bands)
        idx, valid = idx.to(verts_px.device), valid.to(verts_px.device)
        dirs = torch.as_tensor(self.band_dirs, dtype=verts_px.dtype, device=verts_px.device) @ rotation.transpose(-1, -2)
        p = verts_px[..., idx, :]                                          # (..., B, L, 2)
        score = (p.detach() * dirs.detach()[..., :, None, :2]).sum(-1)
        score = score.masked_fill(~valid, float("-inf"))
        best = score.argmax(-1)                                            # (..., B)
        return torch.gather(p, -2, best[..., None, None].expand(*best.shape, 1, 2)).squeeze(-2)

    def snap_jaw(self, contour: torch.Tensor, observed_jaw_px: torch.Tensor, window: int = 4) -> torch.Tensor:
        """(17, 2): each observed jaw landmark snaps to the nearest contour vertex of the bands within
        ``window`` of its nominal band (so the jaw keeps its order). Batched like :meth:`contour`."""
        idx, valid = _jaw_windows(tuple(int(b) for b in self.band_of_jaw), len(self.bands), window)
        idx, valid = idx.to(contour.device), valid.to(contour.device)
        cand = contour[..., idx, :]                                        # (..., 17, W, 2)
        d2 = ((cand.detach() - observed_jaw_px[..., :, None, :]) ** 2).sum(-1).masked_fill(~valid, float("inf"))
        best = d2.argmin(-1)
        return torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 2)).squeeze(-2)


def padded_bands(bands: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Bands of unequal length as one (B, L) index matrix (padded with each band's first vertex) and its mask."""
    n = max(len(b) for b in bands)
    idx = torch.zeros(len(bands), n, dtype=torch.long)
    valid = torch.zeros(len(bands), n, dtype=torch.bool)
    for k, b in enumerate(bands):
        b = torch.as_tensor(np.asarray(b), dtype=torch.long)
        idx[k, :len(b)], idx[k, len(b):], valid[k, :len(b)] = b, b[0], True
    return idx, valid


@lru_cache(maxsize=8)
def _jaw_windows(band_of_jaw: tuple[int, ...], n_bands: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = 2 * window + 1
    idx = torch.zeros(len(band_of_jaw), width, dtype=torch.long)
    valid = torch.zeros(len(band_of_jaw), width, dtype=torch.bool)
    for j, b in enumerate(band_of_jaw):
        lo, hi = max(0, b - window), min(n_bands, b + window + 1)
        idx[j, :hi - lo], idx[j, hi - lo:], valid[j, :hi - lo] = torch.arange(lo, hi), lo, True
    return idx, valid


def _uv_lookup(template, uv_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tris = face_triangles(template)
    tri2d = template.uv[template.faces[tris]]
    out_t, out_b = [], []
    for p in uv_points:
        idx, w = _point_in_triangles(p, tri2d)
        if len(idx) == 0:  # on a chart border: nearest triangle centroid
            k = int(np.argmin(((tri2d.mean(1) - p) ** 2).sum(1)))
            idx, w = np.array([k]), np.full((1, 3), 1 / 3)
        out_t.append(tris[idx[0]])
        out_b.append(np.clip(w[0], 0, 1) / np.clip(w[0], 0, 1).sum())
    return np.array(out_t), np.array(out_b)


def _jaw_bands(template, neutral: np.ndarray, jaw_xyz: np.ndarray, centre: np.ndarray,
               half_width: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Bands: face-skin vertices near planes through the forward axis at angles spanning the jaw."""
    skin = np.nonzero((template.region == REGION["face"]) & (template.part == PART["skin"]))[0]
    rel = neutral[skin, :2] - centre[None, :2]
    ang_v = np.arctan2(rel[:, 1], rel[:, 0])
    jaw_rel = jaw_xyz[:, :2] - centre[None, :2]
    ang_j = np.unwrap(np.arctan2(jaw_rel[:, 1], jaw_rel[:, 0]))
    n = 16 * JAW_BANDS_PER_GAP + 1
    angles = np.interp(np.linspace(0, 16, n), np.arange(17), ang_j)
    bands, dirs = [], []
    for a in angles:
        d = np.array([math.cos(a), math.sin(a)])
        along = rel @ d
        across = np.abs(rel @ np.array([-d[1], d[0]]))
        sel = (along > 0.02) & (across < half_width) & (np.abs(np.angle(np.exp(1j * (ang_v - a)))) < 1.2)
        sel &= neutral[skin, 2] > -0.04
        bands.append(skin[sel])
        dirs.append([d[0], d[1], 0.0])
    return bands, np.array(dirs), np.arange(17) * JAW_BANDS_PER_GAP


def _out_of_eye_apertures(template, neutral: np.ndarray, uv: np.ndarray, max_depth: float = 0.004) -> np.ndarray:
    """Eye points (36-47) moved outward from the eye centre in UV until they leave the eyelid aperture.

    The aperture is recessed 18 mm into the head; a lid-margin point that falls just inside it (by
    detector noise, or on a coarse mesh) would sit deep behind the lids and project wrongly in turned
    views. A point counts as recessed while the skin rises by more than ``max_depth`` just further out.
    """
    uv = uv.copy()
    for eye in (GROUPS["eye_r"], GROUPS["eye_l"]):
        centre = uv[list(eye)].mean(0)
        for i in eye:
            scales = np.linspace(1.0, 1.8, 17)
            cand = centre + (uv[i] - centre) * scales[:, None]
            tri, bary = _uv_lookup(template, cand)
            z = (neutral[template.faces[tri], 2] * bary).sum(1)
            step = z[2:] - z[:-2]                       # a rise ahead means we are still inside the recess
            ok = np.nonzero(step < max_depth)[0]
            uv[i] = cand[ok[0]] if len(ok) else cand[-1]
    return uv


@lru_cache(maxsize=4)
def _embedding_cached(cfg_json: str) -> LandmarkEmbedding:
    from synshot.head.config import HeadConfig
    from synshot.head.model import HeadModel
    from synshot.head.params import IdentityParams

    head = HeadModel(HeadConfig.model_validate_json(cfg_json))
    t = head.template
    with torch.no_grad():
        neutral = head.vertices(IdentityParams.mean(), torch.zeros(len(head.expression_names))).double().numpy()
    tri, bary = _uv_lookup(t, _out_of_eye_apertures(t, neutral, LANDMARK_UV))
    faces = t.faces[tri]
    lm = (neutral[faces] * bary[..., None]).sum(1)
    centre = lm[[27, 28, 29, 30]].mean(0)
    spacing = float(np.median(np.linalg.norm(neutral[t.faces[:, 0]] - neutral[t.faces[:, 1]], axis=1)))
    bands, band_dirs, band_of_jaw = _jaw_bands(t, neutral, lm[:17], centre, half_width=max(0.002, 1.2 * spacing))
    return LandmarkEmbedding(tri=tri, bary=bary, faces=faces, bands=bands, band_dirs=band_dirs, band_of_jaw=band_of_jaw)


def landmark_embedding(head_cfg) -> LandmarkEmbedding:
    """The 68-landmark embedding of a HeadConfig (cached)."""
    if len(LANDMARK_UV) != N_LANDMARKS:
        raise RuntimeError("synshot.head.landmarks.LANDMARK_UV is not calibrated (run --calibrate)")
    return _embedding_cached(head_cfg.model_dump_json())


# ---------------------------------------------------------------------------------------------
# calibration (run once; its output is the LANDMARK_UV table above)


def back_project(points_px: np.ndarray, verts_world: np.ndarray, template, K: np.ndarray,
                 w2c: np.ndarray) -> np.ndarray:
    """(N, 2) UV of the visible face-skin surface under each pixel point (nan where none)."""
    cam = verts_world @ w2c[:3, :3].T + w2c[:3, 3]
    px = cam[:, :2] / cam[:, 2:3] @ K[:2, :2].T + K[:2, 2]
    tris = face_triangles(template)
    f = template.faces[tris]
    out = np.full((len(points_px), 2), np.nan)
    for i, p in enumerate(points_px):
        idx, w = _point_in_triangles(p, px[f])
        if len(idx) == 0:
            continue
        depth = (cam[f[idx], 2] * w).sum(1)
        k = int(np.argmin(depth))
        out[i] = (template.uv[f[idx[k]]] * w[k][:, None]).sum(0)
    return out


CALIBRATION_SEEDS = tuple(range(101, 109))   # identity seeds of the calibration renders (not 2001+ / 3001+)


def calibrate(seeds=CALIBRATION_SEEDS, size: int = 256, spp: int = 4, work_dir: str | None = None) -> np.ndarray:
    """Measure LANDMARK_UV (see the module docstring); prints per-landmark spread in UV.

    Renders subjects exactly as the held-out ones are made (``data_tools.subject``, tiny head, skin
    detail, out-of-distribution identities), but from identity seeds that are neither validation
    (2001-2010) nor test (3001+) seeds; its two near-frontal inputs (neutral, and smile at ~12 degrees)
    are used. The jaw points (0-16) keep the earlier table's nominal positions: they slide on the
    contour at fit time, and a jaw point on the silhouette often back-projects onto no skin.
    """
    import json
    import tempfile
    from pathlib import Path

    from PIL import Image

    from data_tools.subject import make_subject
    from synshot.faces import detect_faces, landmarks68
    from synshot.head import HeadConfig, HeadModel, IdentityParams

    head = HeadModel(HeadConfig.tiny())
    samples = []
    with tempfile.TemporaryDirectory(prefix="landmark_calibration_", dir=work_dir) as tmp:
        for seed in seeds:
            d = make_subject(seed, Path(tmp) / f"s{seed}", size=size, spp=spp, eval_views=0, tiny_head=True)
            cams = {f["file"]: f for f in json.loads((d / "cameras.json").read_text())["frames"]}
            params = json.loads((d / "params.json").read_text())
            ident = IdentityParams.from_dict(params["identity"])
            for fr in params["frames"][:2]:
                rgb = np.asarray(Image.open(d / "images" / fr["file"]).convert("RGB"))
                faces = detect_faces(rgb, upsample=0) or detect_faces(rgb, upsample=1)
                if not faces:
                    print(f"seed {seed} {fr['file']}: no face detected")
                    continue
                with torch.no_grad():
                    verts = head.vertices(ident, torch.tensor(fr["expression"], dtype=torch.float32)).double().numpy()
                w2c = np.asarray(cams[fr["file"]]["w2c"]) @ np.asarray(fr["head_pose"])
                pts = landmarks68(rgb, faces[0])
                samples.append(back_project(pts, verts, head.template, np.asarray(cams[fr["file"]]["K"]), w2c))
                print(f"seed {seed} {fr['file']}: detected (score {faces[0].score:.2f})")
    arr = np.stack(samples)                                                  # (S, 68, 2)
    uv = np.nanmedian(arr, axis=0)
    uv[list(JAW)] = MEASURED_UV[list(JAW)]
    print("spread (UV, median abs dev):", np.round(np.nanmedian(np.abs(arr - uv), axis=0).max(1), 4).tolist())
    return uv


class LandmarksToolConfig(ConfigBase):
    """The landmark table's calibration and figure."""

    calibrate: bool = False  # measure the UV table (rendered subjects + dlib) and print it
    identities: int = Field(len(CALIBRATION_SEEDS), ge=1)  # subjects rendered for the calibration (seeds from 101)


CLI = Command("head landmarks", "Calibrate the 68 landmarks' UV table on the head model, or draw them.",
              config_cls=LandmarksToolConfig, out_help="write the landmark figure (PNG) here",
              example="synshot head landmarks --out docs/img/landmarks.png")
CLI.option("--calibrate", key="calibrate", action="store_true", help="measure the UV table and print it")
CLI.option("--identities", key="identities", type=int, help="identities rendered for the calibration")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: LandmarksToolConfig) -> int:
    if cfg.calibrate:
        uv = calibrate(tuple(range(101, 101 + cfg.identities)))
        print("MEASURED_UV = np.array([")
        for k in range(0, N_LANDMARKS, 4):
            print("    " + " ".join(f"[{a:.5f}, {b:.5f}]," for a, b in uv[k:k + 4]))
        print("])")
    if args.out:
        from synshot.head.landmark_figure import landmark_figure

        landmark_figure(args.out)
        get_logger(__name__).info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
