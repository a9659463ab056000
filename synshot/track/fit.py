"""The joint landmark fit: one identity, per-photo expression, head pose and camera.

Staged like every model-based tracker (pose -> shape -> expression) because each stage is only
well posed once the previous one is close: shape before pose would bend the face to explain a
rotation. The loss is a Geman-McClure robust function of landmark residuals in units of the face
size (so a bad dlib point on a turned jaw cannot drag the fit), plus Gaussian priors on the shape
and feature coefficients (they are ~N(0,1) in the head model), a prior keeping expressions small
and a log-normal prior on the focal length. Deterministic: fixed initialisation (PnP), full-batch
Adam, no sampling.

Only the vertices the landmarks need (a few hundred) are deformed at each step: the head model's
fields are per-vertex, so a sub-template gives exactly the same positions as the full mesh.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from synshot.head import HeadModel, IdentityParams
from synshot.head.deform import Deformer
from synshot.head.landmarks import JAW, LandmarkEmbedding, landmark_embedding, padded_bands
from synshot.head.params import FEATURE_NAMES, N_SHAPE
from synshot.track.config import FitConfig
from synshot.track.geometry import axis_angle_to_matrix, project

INNER = np.arange(17, 68)


@dataclass
class PhotoObservation:
    """What the detector saw in one photo (pixel coordinates of the working image)."""

    name: str
    width: int
    height: int
    landmarks: np.ndarray       # (68, 2)
    face_size: float            # sqrt(box area), the residual unit
    focal_guess: float          # pixels


def box_face_size(box) -> float:
    """The face size of a detector box (left, top, right, bottom): sqrt of its area, in pixels; the unit
    of every landmark residual and drift."""
    l, t, r, b = box
    return float(np.sqrt((r - l) * (b - t)))


@dataclass
class FitResult:
    shape: np.ndarray           # (12,)
    features: np.ndarray        # (17,)
    expressions: np.ndarray     # (N, E)
    rotations: np.ndarray       # (N, 3, 3) head -> camera
    translations: np.ndarray    # (N, 3) metres
    focals: np.ndarray          # (N,) pixels
    model_landmarks: np.ndarray  # (N, 68, 2) projected model landmarks (jaw snapped to the contour)
    rmse_px: np.ndarray         # (N,)
    losses: list[float]


class LandmarkHead:
    """The head model restricted to the vertices of the landmarks and the jaw bands."""

    def __init__(self, head: HeadModel):
        self.head = head
        self.emb: LandmarkEmbedding = landmark_embedding(head.cfg)
        ids = self.emb.vertex_ids
        t = head.template
        per_vertex = {f.name: getattr(t, f.name)[ids] for f in dataclasses.fields(t)
                      if isinstance(getattr(t, f.name), np.ndarray) and getattr(t, f.name).shape[:1] == (t.n_verts,)}
        sub = dataclasses.replace(t, **per_vertex, faces=np.zeros((0, 3), dtype=np.int64))
        self.deformer = Deformer(sub)
        remap = np.full(t.n_verts, -1, dtype=np.int64)
        remap[ids] = np.arange(len(ids))
        self.faces = torch.as_tensor(remap[self.emb.faces])
        self.bary = torch.as_tensor(self.emb.bary, dtype=torch.float32)
        self.bands = padded_bands([remap[b] for b in self.emb.bands])
        self.n_expr = len(head.expression_names)

    def vertices(self, identity: IdentityParams, expression: torch.Tensor) -> torch.Tensor:
        return self.deformer(identity, expression)

    def fixed_points(self, verts: torch.Tensor) -> torch.Tensor:
        """(..., 68, 3) landmark positions (jaw at its nominal place) from (..., V, 3) sub-vertices."""
        return (verts[..., self.faces, :] * self.bary[..., None]).sum(-2)

    def project_landmarks(self, verts: torch.Tensor, R, t, f, c, observed: torch.Tensor) -> torch.Tensor:
        """(68, 2): inner points fixed on the mesh, jaw points snapped to the image contour. Batched
        over photos when every argument has a leading photo axis."""
        lm = project(self.fixed_points(verts), R, t, f, c)
        px = project(verts, R, t, f, c)
        contour = self.emb.contour(px, R, self.bands)
        return torch.cat([self.emb.snap_jaw(contour, observed[..., :17, :]), lm[..., 17:, :]], -2)


def mean_identity_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(N_SHAPE), torch.zeros(len(FEATURE_NAMES))


def identity_with(shape: torch.Tensor, features: torch.Tensor, base: IdentityParams | None = None) -> IdentityParams:
    ident = (base or IdentityParams.mean()).copy()
    ident.shape, ident.features = shape, features
    return ident


def pnp_init(lhead: LandmarkHead, obs: PhotoObservation, focal: float) -> tuple[np.ndarray, np.ndarray]:
    """Head-to-camera rotation vector and translation from the inner landmarks of the mean head."""
    with torch.no_grad():
        v = lhead.vertices(IdentityParams.mean(), torch.zeros(lhead.n_expr))
        pts3 = lhead.fixed_points(v).double().numpy()[INNER]
    K = np.array([[focal, 0, obs.width / 2], [0, focal, obs.height / 2], [0, 0, 1.0]])
    pts2 = obs.landmarks[INNER] - 0.5                      # OpenCV: pixel centres at integer coordinates
    # start facing the camera at a distance matching the face size, then refine (iterative PnP)
    rvec0 = np.array([np.pi, 0.0, 0.0])                    # head y up / z forward -> camera y down / z forward
    depth = focal * 0.13 / max(obs.face_size, 1.0)
    centre = obs.landmarks[INNER].mean(0)
    tvec0 = np.array([(centre[0] - obs.width / 2) * depth / focal, (centre[1] - obs.height / 2) * depth / focal, depth])
    ok, rvec, tvec = cv2.solvePnP(pts3, pts2, K, None, rvec0.copy(), tvec0.copy(), useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or not np.all(np.isfinite(rvec)) or tvec[2, 0] <= 0:
        return rvec0, tvec0
    return rvec[:, 0], tvec[:, 0]


def fit_landmarks(head: HeadModel, observations: list[PhotoObservation], cfg: FitConfig, shared_focal: bool,
                  log=None, known: tuple[IdentityParams, np.ndarray] | None = None) -> FitResult:
    """Jointly fit identity, expressions, poses and focal lengths to the detected landmarks.

    ``known`` = (identity, (N, E) expressions) fixes the face to a known one and fits only the poses
    (with every stage's step budget): the accuracy floor of landmark-based pose (synshot.bench.track).

    All photos are projected in one batched pass. The deformation (the costly part) is evaluated
    only when the stage changes it: once for the pose stage, once per step (shared by every photo,
    expressions are still zero) in the shape stage, per photo in the expression stage. A stage ends
    early once its loss stops improving (``cfg.tolerance`` relative over ``cfg.patience`` steps).
    """
    torch.manual_seed(0)
    lhead = LandmarkHead(head)
    n = len(observations)
    obs = torch.as_tensor(np.stack([o.landmarks for o in observations]), dtype=torch.float32)
    scale = torch.tensor([o.face_size for o in observations], dtype=torch.float32)
    centres = torch.tensor([[o.width / 2, o.height / 2] for o in observations], dtype=torch.float32)
    guess = torch.tensor([o.focal_guess for o in observations], dtype=torch.float64)
    if shared_focal:
        guess = guess.mean().expand(n).clone()
    init = [pnp_init(lhead, o, float(guess[i])) for i, o in enumerate(observations)]
    rvec = torch.tensor(np.stack([r for r, _ in init]), dtype=torch.float32, requires_grad=True)
    tvec = torch.tensor(np.stack([t for _, t in init]), dtype=torch.float32, requires_grad=True)
    log_f = torch.zeros(1 if shared_focal else n, requires_grad=True)
    shape, feats = (x.requires_grad_(True) for x in mean_identity_tensors())
    expr = torch.zeros(n, lhead.n_expr, requires_grad=True)
    weights = torch.ones(68)
    weights[list(JAW)] = cfg.jaw_weight
    sigma2 = cfg.robust_sigma ** 2
    guess_f = guess.float()

    if known is not None:
        with torch.no_grad():
            known_verts = torch.stack([lhead.vertices(known[0], torch.as_tensor(e, dtype=torch.float32))
                                       for e in known[1]])
        cfg = cfg.model_copy(update={"pose_steps": cfg.pose_steps + cfg.shape_steps + cfg.expression_steps,
                                     "shape_steps": 0, "expression_steps": 0})

    def vertices(stage: str) -> torch.Tensor:
        if known is not None:
            return known_verts
        ident = identity_with(shape, feats)
        if stage == "shape":
            return lhead.vertices(ident, torch.zeros(lhead.n_expr)).expand(n, -1, -1)
        return torch.stack([lhead.vertices(ident, expr[i].clamp(0, 1)) for i in range(n)])

    def forward(verts: torch.Tensor):
        R = axis_angle_to_matrix(rvec)
        f = guess_f * torch.exp(log_f.expand(n))
        lm = lhead.project_landmarks(verts, R, tvec, f, centres, obs)
        r2 = (((lm - obs) / scale[:, None, None]) ** 2).sum(-1)
        total = ((weights * r2 / (r2 + sigma2)).sum(-1) / weights.sum()).mean()
        total = total + cfg.shape_prior * (shape.pow(2).mean() + feats.pow(2).mean())
        total = total + cfg.expression_prior * expr.clamp(0, 1).pow(2).sum(1).mean()
        total = total + cfg.focal_prior * log_f.pow(2).mean()
        return total, lm

    focal_params = [log_f] if cfg.fit_focal else []
    stages = [("pose", cfg.pose_steps, [rvec, tvec] + focal_params),
              ("shape", cfg.shape_steps, [rvec, tvec, shape, feats] + focal_params),
              ("expression", cfg.expression_steps, [rvec, tvec, shape, feats, expr] + focal_params)]
    lrs = {id(rvec): cfg.lr * 0.5, id(tvec): cfg.lr * 0.05, id(log_f): cfg.lr * 0.5, id(shape): cfg.lr * 5,
           id(feats): cfg.lr * 5, id(expr): cfg.lr * 2}
    losses: list[float] = []
    for name, steps, params in stages:
        if steps <= 0:
            continue
        opt = torch.optim.Adam([{"params": [p], "lr": lrs[id(p)]} for p in params])
        fixed = None
        if name == "pose":
            with torch.no_grad():
                fixed = vertices("pose")
        start = len(losses)
        for step in range(steps):
            opt.zero_grad()
            loss, _ = forward(fixed if fixed is not None else vertices(name))
            loss.backward()
            opt.step()
            with torch.no_grad():
                expr.clamp_(0, 1)
            losses.append(float(loss.detach()))
            k = len(losses) - start
            if k > cfg.patience and losses[-1 - cfg.patience] - losses[-1] < cfg.tolerance * losses[-1 - cfg.patience]:
                break
        if log:
            log(f"stage {name}: loss {losses[-1]:.5f} after {len(losses) - start} of {steps} steps")
    with torch.no_grad():
        _, lms = forward(vertices("expression"))
        lm_np = lms.numpy().astype(np.float64)
        rmse = np.sqrt(((lm_np - obs.double().numpy()) ** 2).sum(-1).mean(-1))
        Rs = axis_angle_to_matrix(rvec).numpy().astype(np.float64)
        f = (guess_f * torch.exp(log_f.expand(n))).numpy().astype(np.float64)
    return FitResult(shape=shape.detach().numpy().astype(np.float64), features=feats.detach().numpy().astype(np.float64),
                     expressions=expr.detach().clamp(0, 1).numpy().astype(np.float64), rotations=Rs,
                     translations=tvec.detach().numpy().astype(np.float64), focals=f, model_landmarks=lm_np,
                     rmse_px=rmse, losses=losses)
