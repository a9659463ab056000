"""Figure of the 68 landmarks on the mean head (docs/img/landmarks.png): frontal and turned views.

Flat-shaded painter's-algorithm rendering with OpenCV (no renderer needed): fixed landmarks in red,
jaw candidate bands in grey, and the contour points the jaw landmarks slide to in a given view in blue.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch


def _view(verts: np.ndarray, faces: np.ndarray, yaw_deg: float, size: int, emb, lm3: np.ndarray) -> np.ndarray:
    yaw = math.radians(yaw_deg)
    Ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    flip = np.diag([1.0, -1.0, -1.0])
    R, t = flip @ Ry, np.array([0.0, -0.01, 0.8])
    f = 2.6 * size
    cam = verts @ R.T + t
    px = cam[:, :2] / cam[:, 2:3] * f + size / 2
    tri = px[faces]
    n = np.cross(cam[faces[:, 1]] - cam[faces[:, 0]], cam[faces[:, 2]] - cam[faces[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    light = np.array([0.3, -0.3, -1.0]) / np.linalg.norm([0.3, -0.3, -1.0])
    shade = np.clip(n @ light, 0, 1)
    front = n[:, 2] < 0
    order = np.argsort(-cam[faces, 2].mean(1))
    img = np.full((size, size, 3), 255, np.uint8)
    for k in order:
        if not front[k]:
            continue
        g = int(70 + 170 * shade[k])
        cv2.fillConvexPoly(img, np.round(tri[k] * 4).astype(np.int32), (g, g, g), lineType=cv2.LINE_AA, shift=2)
    for band in emb.bands:
        for p in px[band]:
            cv2.circle(img, (int(p[0]), int(p[1])), 1, (150, 150, 150), -1)
    contour = emb.contour(torch.as_tensor(px), torch.as_tensor(R)).numpy()
    for p in contour:
        cv2.circle(img, (int(round(p[0])), int(round(p[1]))), 3, (40, 90, 230), -1, lineType=cv2.LINE_AA)
    lp = (lm3 @ R.T + t)
    lp = lp[:, :2] / lp[:, 2:3] * f + size / 2
    for i, p in enumerate(lp):
        if i < 17:
            continue
        cv2.circle(img, (int(round(p[0])), int(round(p[1]))), 3, (220, 40, 40), -1, lineType=cv2.LINE_AA)
    cv2.putText(img, f"yaw {yaw_deg:+.0f} deg", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def landmark_figure(path: str, size: int = 420) -> None:
    from PIL import Image

    from synshot.head import HeadConfig, HeadModel, IdentityParams
    from synshot.head.landmarks import landmark_embedding
    from synshot.track.masks import head_faces

    head = HeadModel(HeadConfig())
    emb = landmark_embedding(head.cfg)
    with torch.no_grad():
        v = head.vertices(IdentityParams.mean(), torch.zeros(len(head.expression_names))).double().numpy()
    lm3 = (v[emb.faces] * emb.bary[..., None]).sum(1)
    outer, _ = head_faces(head)
    panels = [_view(v, outer, yaw, size, emb, lm3) for yaw in (0.0, 35.0)]
    Image.fromarray(np.concatenate(panels, 1)).save(path)
