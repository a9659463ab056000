"""Foreground masks (head, hair, neck) of tracked photos, and the projected-mesh rasters they start from.

Why GrabCut seeded by the fit: the fitted head tells where the head is for sure (the eroded face),
where it probably is (the projected mesh, hair shell included) and where it cannot be (far from
it), which is exactly the trimap GrabCut's colour models need. A user mask always wins.
"""

from __future__ import annotations

import cv2
import numpy as np

from synshot.head.template import PART, REGION


def mesh_raster(verts_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, width: int, height: int,
                scale: float = 1.0) -> np.ndarray:
    """(H, W) uint8 1 where any triangle of camera-frame vertices projects (a silhouette)."""
    z = np.clip(verts_cam[:, 2:3], 1e-4, None)
    px = (verts_cam[:, :2] / z) @ K[:2, :2].T + K[:2, 2]
    px = px * scale - 0.5
    h, w = int(round(height * scale)), int(round(width * scale))
    out = np.zeros((h, w), np.uint8)
    tris = np.round(px[faces] * 16).astype(np.int32)
    front = (verts_cam[faces, 2] > 1e-3).all(1)
    cv2.fillPoly(out, list(tris[front]), 1, lineType=cv2.LINE_8, shift=4)
    return out


def head_faces(head) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of the outer head (no mouth interior), and those of the face skin."""
    t = head.template
    part = t.part[t.faces]
    outer = ~np.isin(part, [PART["teeth"], PART["tongue"], PART["cavity"]]).any(1)
    face = ((t.region[t.faces] == REGION["face"]) & (part == PART["skin"])).all(1)
    return t.faces[outer], t.faces[face]


def grabcut_mask(rgb: np.ndarray, head_sil: np.ndarray, face_sil: np.ndarray, iters: int, work_side: int
                 ) -> np.ndarray:
    """(H, W) float mask from GrabCut seeded by the projected head (``head_sil``) and face (``face_sil``)."""
    H, W = head_sil.shape
    s = min(1.0, work_side / max(H, W))
    size = (max(1, round(W * s)), max(1, round(H * s)))
    img = cv2.resize((np.clip(rgb, 0, 1) * 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    head = cv2.resize(head_sil, size, interpolation=cv2.INTER_NEAREST)
    face = cv2.resize(face_sil, size, interpolation=cv2.INTER_NEAREST)
    r = max(2, round(0.08 * max(size)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    near = cv2.dilate(head, k)
    sure_fg = cv2.erode(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    trimap = np.full(head.shape, cv2.GC_BGD, np.uint8)
    trimap[near > 0] = cv2.GC_PR_BGD
    trimap[head > 0] = cv2.GC_PR_FGD
    trimap[sure_fg > 0] = cv2.GC_FGD
    if (trimap == cv2.GC_BGD).sum() < 10 or (trimap == cv2.GC_FGD).sum() < 10:
        return cv2.resize(head.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), trimap, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    fg = ((trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n > 2:  # keep the component that holds the face
        keep = np.bincount(lab[sure_fg > 0].ravel(), minlength=n)[1:].argmax() + 1 if sure_fg.any() else \
            1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        fg = (lab == keep).astype(np.uint8)
    fg = cv2.GaussianBlur(fg.astype(np.float32), (3, 3), 0)
    return np.clip(cv2.resize(fg, (W, H), interpolation=cv2.INTER_LINEAR), 0, 1)
