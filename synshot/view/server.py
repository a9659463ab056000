"""The browser viewer: a viser server on 127.0.0.1 showing an avatar as Gaussian splats.

The browser orbits the splats (viser's WebGL splat renderer, sorted on the client). Sliders set the
expression coefficients and the head pose; each change is decoded by the prior on the server
(expression -> ``E_expr`` -> decoders -> Gaussians) by one worker thread that always takes the newest
slider state (changes made while a decode runs are coalesced, never queued), and the new splats
replace the old ones. A driving sequence (JSON or another subject, as ``synshot drive`` takes) plays
by moving the sliders at its frame rate; frames the decoder cannot keep up with are skipped. Input
photos (``--subject``) are shown beside the view; choosing one moves the camera to the photo's
camera and sets its tracked expression and pose. "Screenshot" asks the browser for the current
frame, writes it as PNG and offers it as a download.

When the avatar cannot be loaded the page shows the error (and the terminal printed it); closing the
last browser tab stops the server after ``exit_after_close_s``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synshot.cli import get_logger
from synshot.invert.avatar import Avatar
from synshot.invert.drive import DriveSequence
from synshot.view.scene import SCENE_UNITS_PER_METRE, head_pose, splat_arrays, viser_camera

LOG = get_logger(__name__)
SPLAT_NODE = "/avatar"
POSE_SLIDERS = (("yaw", -60.0, 60.0, "deg"), ("pitch", -40.0, 40.0, "deg"), ("roll", -40.0, 40.0, "deg"),
                ("x", -10.0, 10.0, "cm"), ("y", -10.0, 10.0, "cm"), ("z", -10.0, 10.0, "cm"))


@dataclass
class Photo:
    name: str
    image: np.ndarray  # (H,W,3) uint8
    K: torch.Tensor
    w2c: torch.Tensor
    expression: torch.Tensor
    head_pose: torch.Tensor


@dataclass
class UpdateStats:
    """Server-side cost of one slider change: prior decode + splat conversion, and sending to the browser."""

    decode_s: list[float] = field(default_factory=list)
    send_s: list[float] = field(default_factory=list)
    updates: int = 0

    def add(self, decode_s: float, send_s: float) -> None:
        self.decode_s = (self.decode_s + [decode_s])[-50:]
        self.send_s = (self.send_s + [send_s])[-50:]
        self.updates += 1

    def summary(self) -> str:
        if not self.decode_s:
            return "no update yet"
        d, s = float(np.median(self.decode_s)), float(np.median(self.send_s))
        return (f"update {self.updates}: decode {1000 * d:.0f} ms + send {1000 * s:.0f} ms "
                f"-> {1 / max(d + s, 1e-6):.1f} updates/s")


class AvatarViewer:
    """One viser server for one avatar (or for an error message when the avatar could not be loaded)."""

    def __init__(self, avatar: Avatar | None, *, host: str = "127.0.0.1", port: int = 8080,
                 sequences: dict[str, DriveSequence] | None = None, photos: list[Photo] | None = None,
                 screenshot_dir: Path | None = None, error: str | None = None, title: str = "SynShot avatar") -> None:
        import viser

        self.avatar = avatar
        self.sequences = sequences or {}
        self.photos = photos or []
        self.screenshot_dir = screenshot_dir
        self.stats = UpdateStats()
        self.requested_port = port
        self.server = viser.ViserServer(host=host, port=port, label=title, verbose=False)
        self.port = int(self.server.get_port())
        self.host = host
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._version = 0  # bumped by every slider change; the worker decodes the newest
        self._shown_version = -1
        self._playing = False
        self._last_client_left: float | None = None
        self._ever_connected = False
        self._on_client_ready = None  # set by the error page: what a newly connected tab is shown
        self.server.scene.set_up_direction("+y")
        self.server.gui.configure_theme(control_width="large", dark_mode=False, show_logo=False)
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)
        if avatar is None:
            self._build_error_page(error or "no avatar")
            return
        self._build_gui()
        self._worker = threading.Thread(target=self._decode_loop, name="avatar-decode", daemon=True)
        self._worker.start()
        self._player = threading.Thread(target=self._play_loop, name="sequence-player", daemon=True)
        self._player.start()
        self._changed()

    # ------------------------------------------------------------------ pages
    def _build_error_page(self, message: str) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown(f"**The avatar could not be loaded.**\n\n`error: {message}`")
        self.error_message = message

        def show(client) -> None:
            with client.gui.add_modal("Cannot show this avatar") as modal:
                client.gui.add_markdown(f"error: {message}")
                client.gui.add_button("Close").on_click(lambda _: modal.close())

        self._on_client_ready = show

    def _build_gui(self) -> None:
        av, gui = self.avatar, self.server.gui
        ref = av.reference
        self._ref_pose = ref["head_pose"].float()
        self._target = self._ref_pose[:3, 3].clone()
        self._home = viser_camera(ref["K"].float(), ref["w2c"].float(), int(ref["height"]), self._target)
        cam = self.server.initial_camera
        cam.position, cam.look_at, cam.up, cam.fov = (self._home["position"], self._home["look_at"],
                                                     self._home["up"], self._home["fov"])
        n = sum(av.model.gaussian_counts().values())
        gui.add_markdown(f"**{av.subject or 'avatar'}**: {n} Gaussians, head model {av.head_model_version}. "
                         "Drag to orbit, scroll to zoom.")
        self.status = gui.add_markdown("decoding ...")
        with gui.add_folder("Expression"):
            self.expr_sliders = [gui.add_slider(name, 0.0, 1.0, 0.01, 0.0) for name in av.expression_names]
        with gui.add_folder("Head pose"):
            self.pose_sliders = [gui.add_slider(f"{name} ({unit})", lo, hi, 0.5, 0.0)
                                 for name, lo, hi, unit in POSE_SLIDERS]
        for s in self.expr_sliders + self.pose_sliders:
            s.on_update(lambda _: self._changed())
        reset = gui.add_button("Neutral expression and pose")
        reset.on_click(lambda _: self.set_state(torch.zeros(len(self.expr_sliders)), [0.0] * 6))
        if self.sequences:
            with gui.add_folder("Driving sequence"):
                names = list(self.sequences)
                self.seq_choice = gui.add_dropdown("sequence", names, initial_value=names[0])
                first = self.sequences[names[0]]
                self.frame_slider = gui.add_slider("frame", 0, max(first.expressions.shape[0] - 1, 1), 1, 0)
                self.play_button = gui.add_button("Play")
                self.seq_choice.on_update(lambda _: self._select_sequence())
                self.frame_slider.on_update(lambda _: self._show_frame(int(self.frame_slider.value)))
                self.play_button.on_click(lambda _: self._toggle_play())
        with gui.add_folder("Compare", expand_by_default=bool(self.photos)):
            if self.photos:
                labels = ["(free view)"] + [p.name for p in self.photos]
                self.photo_choice = gui.add_dropdown("input photo", labels, initial_value=labels[0])
                self.photo_image = gui.add_image(self.photos[0].image, label="input photo", visible=False)
                self.photo_choice.on_update(lambda event: self._show_photo(event.client))
                self.frustums = [self._add_frustum(i, p) for i, p in enumerate(self.photos)]
                show = gui.add_checkbox("show photo cameras", False)
                show.on_update(lambda _: [setattr(f, "visible", show.value) for f in self.frustums])
            else:
                gui.add_markdown("Pass `--subject DIR` to compare with the input photos.")
        home = gui.add_button("Reference view")
        home.on_click(lambda event: self._move_camera(event.client, self._home))
        shot = gui.add_button("Screenshot")
        shot.on_click(lambda event: self.screenshot(event.client))

    def _add_frustum(self, i: int, p: Photo):
        h, w = p.image.shape[:2]
        cam = viser_camera(p.K, p.w2c, h, self._target)
        c2w = torch.linalg.inv(p.w2c.double())
        from viser.transforms import SO3

        return self.server.scene.add_camera_frustum(  # hidden: at a photo's camera it would cover the view
            f"/photos/{i}", fov=cam["fov"], aspect=w / h, scale=5.0, image=p.image, visible=False,
            wxyz=SO3.from_matrix(c2w[:3, :3].numpy()).wxyz, position=cam["position"])

    # ------------------------------------------------------------------ state
    def expression(self) -> torch.Tensor:
        return torch.tensor([float(s.value) for s in self.expr_sliders], dtype=torch.float32)

    def pose(self) -> torch.Tensor:
        yaw, pitch, roll, x, y, z = (float(s.value) for s in self.pose_sliders)
        return head_pose(self._ref_pose, yaw, pitch, roll, (x, y, z))

    def set_state(self, expression: torch.Tensor, pose_values: list[float] | None = None) -> None:
        """Move the sliders (the browser follows); one decode follows the last change."""
        with self.server.atomic():
            for s, v in zip(self.expr_sliders, expression.tolist()):
                s.value = float(min(max(v, 0.0), 1.0))
            for s, v in zip(self.pose_sliders, pose_values or []):
                s.value = float(v)

    def _changed(self) -> None:
        with self._lock:
            self._version += 1
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """True once the newest slider state is on screen (used by tests and the bench)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self._shown_version == self._version:
                    return True
            time.sleep(0.02)
        return False

    def _decode_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stop.is_set():
                break
            with self._lock:
                version = self._version
            if version == self._shown_version:
                continue
            try:
                self._show(version)
            except Exception as exc:  # noqa: BLE001 - the page must say why it stopped updating
                LOG.exception("decoding the avatar failed")
                self.status.content = f"**decoding failed:** `{type(exc).__name__}: {exc}`"
                with self._lock:
                    self._shown_version = version

    def _show(self, version: int) -> None:
        t0 = time.perf_counter()
        g = self.avatar.gaussians(self.expression()[None], self.pose()[None])
        arrays = splat_arrays({k: v.cpu() for k, v in g.sample(0).items()})
        t1 = time.perf_counter()
        self.server.scene.add_gaussian_splats(SPLAT_NODE, **arrays)
        t2 = time.perf_counter()
        self.stats.add(t1 - t0, t2 - t1)
        self.status.content = self.stats.summary()
        with self._lock:
            self._shown_version = version

    # ------------------------------------------------------------------ sequences
    def _current_sequence(self) -> DriveSequence:
        return self.sequences[self.seq_choice.value]

    def _select_sequence(self) -> None:
        seq = self._current_sequence()
        self.frame_slider.max = max(seq.expressions.shape[0] - 1, 1)
        self.frame_slider.value = 0
        self._show_frame(0)

    def _show_frame(self, i: int) -> None:
        seq = self._current_sequence()
        i = min(max(i, 0), seq.expressions.shape[0] - 1)
        rel = torch.linalg.inv(self._ref_pose) @ seq.head_poses[i].float()
        yaw, pitch, roll = _ypr(rel[:3, :3])
        t = (rel[:3, 3] * 100.0).tolist()
        self.set_state(seq.expressions[i], [yaw, pitch, roll, *t])

    def _toggle_play(self) -> None:
        self._playing = not self._playing
        self.play_button.label = "Pause" if self._playing else "Play"

    def _play_loop(self) -> None:
        while not self._stop.is_set():
            if not (self._playing and self.sequences):
                time.sleep(0.05)
                continue
            seq = self._current_sequence()
            n = seq.expressions.shape[0]
            self.frame_slider.value = (int(self.frame_slider.value) + 1) % n
            time.sleep(1.0 / max(seq.fps, 1))

    # ------------------------------------------------------------------ photos, camera, screenshots
    def _move_camera(self, client, cam: dict) -> None:
        if client is None:
            return
        with client.atomic():
            client.camera.position = cam["position"]
            client.camera.look_at = cam["look_at"]
            client.camera.up_direction = cam["up"]
            client.camera.fov = cam["fov"]

    def _show_photo(self, client) -> None:
        label = self.photo_choice.value
        photo = next((p for p in self.photos if p.name == label), None)
        self.photo_image.visible = photo is not None
        if photo is None:
            return
        self.photo_image.image = photo.image
        rel = torch.linalg.inv(self._ref_pose) @ photo.head_pose.float()
        self.set_state(photo.expression, [*_ypr(rel[:3, :3]), *(rel[:3, 3] * 100.0).tolist()])
        self._move_camera(client, viser_camera(photo.K, photo.w2c, photo.image.shape[0], self._target))

    def screenshot(self, client, height: int | None = None, width: int | None = None) -> Path | None:
        """The browser's current view as PNG: written to ``screenshot_dir`` and offered as a download."""
        from PIL import Image
        import io

        if client is None:
            return None
        h = height or int(client.camera.image_height or 720)
        w = width or int(client.camera.image_width or 1280)
        image = client.get_render(height=h, width=w, transport_format="png", timeout=60.0)
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image)).save(buf, format="PNG")
        path = None
        if self.screenshot_dir is not None:
            from synshot.fsio import write_bytes

            self.screenshot_dir.mkdir(parents=True, exist_ok=True)
            path = self.screenshot_dir / f"view_{time.strftime('%Y%m%d-%H%M%S')}.png"
            write_bytes(path, buf.getvalue())
            LOG.info("screenshot -> %s", path)
        client.send_file_download(path.name if path else "view.png", buf.getvalue())
        return path

    # ------------------------------------------------------------------ lifecycle
    def _on_connect(self, client) -> None:
        self._ever_connected = True
        self._last_client_left = None
        if self._on_client_ready is not None:
            self._on_client_ready(client)

    def _on_disconnect(self, client) -> None:
        if not self.server.get_clients():
            self._last_client_left = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve(self, exit_after_close_s: float | None) -> None:
        """Block until Ctrl-C, or until the last browser tab has been closed for ``exit_after_close_s``."""
        try:
            while not self._stop.is_set():
                left = self._last_client_left
                if (exit_after_close_s is not None and left is not None and not self.server.get_clients()
                        and time.monotonic() - left > exit_after_close_s):
                    LOG.info("the last browser tab closed %.0f s ago: stopping", exit_after_close_s)
                    break
                time.sleep(0.2)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoder and the player (a decode in flight finishes first), then the server."""
        self._stop.set()
        self._wake.set()
        for thread in (getattr(self, "_worker", None), getattr(self, "_player", None)):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=60)
        self.server.stop()


def _ypr(rot: torch.Tensor) -> tuple[float, float, float]:
    """Inverse of :func:`synshot.view.scene.rotation_ypr` (R = Ry(yaw) Rx(pitch) Rz(roll)), degrees."""
    import math

    r = rot.double()
    pitch = math.asin(max(-1.0, min(1.0, -float(r[1, 2]))))
    yaw = math.atan2(float(r[0, 2]), float(r[2, 2]))
    roll = math.atan2(float(r[1, 0]), float(r[1, 1]))
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


__all__ = ["AvatarViewer", "Photo", "SCENE_UNITS_PER_METRE", "UpdateStats"]
