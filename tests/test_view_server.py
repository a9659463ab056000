"""The viewer's server without a browser: sequences drive the sliders, photos set their frame, decodes follow."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from synshot.invert.drive import DriveSequence
from synshot.view.scene import head_pose
from synshot.view.server import AvatarViewer, Photo

from view_helpers import tiny_avatar


@pytest.fixture(scope="module")
def viewer():
    avatar = tiny_avatar()
    e = len(avatar.expression_names)
    ref = avatar.reference
    ex = torch.zeros(3, e)
    ex[1, 0], ex[2, 1] = 0.6, 0.3
    poses = torch.stack([head_pose(ref["head_pose"], y, p, r, t) for y, p, r, t in
                         ((0, 0, 0, (0, 0, 0)), (20, -5, 3, (1, 0, 0)), (-30, 10, 0, (0, 2, -1)))])
    seq = DriveSequence(ex, poses, ref["K"].expand(3, 3, 3), ref["w2c"].expand(3, 4, 4), 64, 64, fps=20)
    photo = Photo("000.png", np.full((64, 64, 3), 128, np.uint8), ref["K"], ref["w2c"], ex[2], poses[1])
    v = AvatarViewer(avatar, port=0, sequences={"seq": seq}, photos=[photo])
    yield v, seq, photo
    v.close()


def test_a_sequence_frame_sets_expression_and_pose_and_is_decoded(viewer):
    v, seq, _ = viewer
    assert v.wait_idle(300) and v.stats.updates >= 1
    n = v.stats.updates
    v.frame_slider.value = 2
    torch.testing.assert_close(v.expression(), seq.expressions[2])
    torch.testing.assert_close(v.pose(), seq.head_poses[2], atol=1e-5, rtol=0)
    assert v.wait_idle(300) and v.stats.updates > n
    assert "updates/s" in v.status.content


def test_play_advances_frames_and_pause_stops(viewer):
    v, _, _ = viewer
    v.frame_slider.value = 0
    v._toggle_play()
    end = time.monotonic() + 60
    while v.frame_slider.value == 0 and time.monotonic() < end:
        time.sleep(0.05)
    v._toggle_play()
    assert v.frame_slider.value != 0 and v.play_button.label == "Play"


def test_choosing_a_photo_sets_its_tracked_expression_and_pose(viewer):
    v, seq, photo = viewer
    v.photo_choice.value = photo.name
    torch.testing.assert_close(v.expression(), photo.expression)
    torch.testing.assert_close(v.pose(), photo.head_pose, atol=1e-5, rtol=0)
    assert v.photo_image.visible
    assert math.isfinite(float(v.pose().sum()))
