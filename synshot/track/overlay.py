"""tracking.png: each photo with detected landmarks, projected model landmarks and the mesh outline."""

from __future__ import annotations

import cv2
import numpy as np

PANEL_HEIGHT = 320
DETECTED, MODEL, OUTLINE, MASK = (60, 220, 60), (235, 60, 40), (60, 140, 255), (255, 210, 0)


def photo_panel(rgb: np.ndarray, detected: np.ndarray | None, model: np.ndarray | None, head_sil: np.ndarray,
                mask: np.ndarray, title: str) -> np.ndarray:
    """One photo (uint8 RGB) with the overlays, scaled to PANEL_HEIGHT rows."""
    H, W = rgb.shape[:2]
    s = PANEL_HEIGHT / H
    size = (max(1, round(W * s)), PANEL_HEIGHT)
    img = cv2.resize((np.clip(rgb, 0, 1) * 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    for sil, colour in ((mask > 0.5, MASK), (head_sil > 0, OUTLINE)):
        m = cv2.resize(sil.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, colour, 1, lineType=cv2.LINE_AA)
    for pts, colour, r in ((detected, DETECTED, 2), (model, MODEL, 1)):
        if pts is None:
            continue
        for x, y in np.asarray(pts) * s:
            cv2.circle(img, (int(round(x - 0.5)), int(round(y - 0.5))), r, colour, -1, lineType=cv2.LINE_AA)
    cv2.rectangle(img, (0, 0), (size[0], 16), (0, 0, 0), -1)
    cv2.putText(img, title, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def tracking_sheet(panels: list[np.ndarray]) -> np.ndarray:
    legend = np.zeros((18, sum(p.shape[1] for p in panels) + 2 * (len(panels) - 1), 3), np.uint8)
    x = 3
    for text, colour in (("detected", DETECTED), ("model", MODEL), ("mesh outline", OUTLINE), ("mask", MASK)):
        cv2.putText(legend, text, (x, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
        x += 10 + 8 * len(text)
    gap = np.full((PANEL_HEIGHT, 2, 3), 255, np.uint8)
    row = panels[0]
    for p in panels[1:]:
        row = np.concatenate([row, gap, p], 1)
    return np.concatenate([row, legend], 0)
