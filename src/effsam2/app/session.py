"""One browser session of ``effsam2 app``: its video, its objects' prompts, its tracking state and files.

Nothing here knows about gradio: the page (``effsam2.app.page``) keeps one :class:`AppSession` per browser
session and calls these methods, so the whole interaction can be tested without a browser.

* The model is shared by all sessions (read only); a session owns its ``InferenceState``, prompts, results
  and a temporary folder, freed by :meth:`AppSession.close`. Model calls of all sessions run one at a time
  (``model_lock``): on a CPU two at once would only share the same cores, and it keeps the model's
  per-backend bookkeeping single-threaded.
* Prompts: clicks (positive / negative) and boxes per object and frame, kept in the order they were given.
  A new click refines the object on that frame as in SAM 2's interactive predictor (after tracking too);
  undo and clear rebuild the tracking state from the remaining prompts, so what is shown always follows
  from the prompts listed.
* Track writes ``masks/`` (palette PNGs), ``masks.json`` (COCO RLE) and ``overlay.mp4`` with the same
  writer as ``effsam2 track``, then zips the PNGs; a new result replaces the previous one whole.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from effsam2.errors import Effsam2Error, PromptError, VideoError
from effsam2.io.frames import FrameSource, open_frames
from effsam2.io.masks import davis_palette
from effsam2.io.output import OutputWriter
from effsam2.io.overlay import overlay_labels
from effsam2.predictor.video import VideoPredictor

POSITIVE, NEGATIVE = 1, 0
MARKER_RADIUS = 6


@dataclass(frozen=True)
class Click:
    x: float
    y: float
    label: int  # POSITIVE or NEGATIVE


@dataclass
class FramePrompt:
    """One object's prompt on one frame: an optional box and clicks."""

    box: tuple[float, float, float, float] | None = None
    clicks: list[Click] = field(default_factory=list)

    def is_empty(self) -> bool:
        return self.box is None and not self.clicks


@dataclass(frozen=True)
class Action:
    """One user prompt, for undo: which object, which frame, and what was given."""

    obj_id: int
    frame: int
    click: Click | None = None
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class TrackResult:
    folder: Path
    overlay_video: Path
    masks_zip: Path
    rle_json: Path
    frames_tracked: int


class AppSession:
    """The state of one browser session (see the module docstring)."""

    def __init__(self, predictor: VideoPredictor, model_lock: threading.Lock, *, max_frames: int | None = None):
        self.predictor = predictor
        self.model_lock = model_lock
        self.max_frames = max_frames
        self.workdir = Path(tempfile.mkdtemp(prefix="effsam2-app-"))
        self.frames: FrameSource | None = None
        self.video_name = ""
        self.state = None
        self.actions: list[Action] = []
        # masks shown per frame, bit-packed (see frame_masks): prompt previews and tracking results
        self.masks: dict[int, dict[int, np.ndarray]] = {}
        self.pending_corner: tuple[float, float] | None = None  # first corner of a box being drawn
        self.result: TrackResult | None = None
        self._runs = 0

    # ---- video ----------------------------------------------------------------------------------------
    def open_video(self, path: str | Path, name: str | None = None) -> None:
        """Open a video file (or frame folder); a file that is not a readable video raises ``VideoError``."""
        frames = open_frames(path)  # VideoError with the reason for a missing, empty or corrupt file
        try:
            frames.get(0)  # decodes: a file with a video header but no decodable frame fails here
            if self.max_frames is not None and len(frames) > self.max_frames:
                raise VideoError(f"{name or Path(path).name}: {len(frames)} frames, this app accepts at most "
                                 f"{self.max_frames} (start it with a larger --max-video-frames)")
            with self.model_lock:
                state = self.predictor.init_state(frames)
        except BaseException:
            frames.close()
            raise
        self._close_video()
        self.frames, self.state = frames, state
        self.video_name = name or Path(path).name
        self.actions, self.masks, self.result, self.pending_corner = [], {}, None, None

    @property
    def num_frames(self) -> int:
        return 0 if self.frames is None else len(self.frames)

    def require_video(self) -> FrameSource:
        if self.frames is None:
            raise PromptError("open a video first")
        return self.frames

    # ---- prompts --------------------------------------------------------------------------------------
    def prompts(self) -> dict[tuple[int, int], FramePrompt]:
        """{(obj_id, frame): prompt} built from the actions in order (a box replaces earlier clicks)."""
        out: dict[tuple[int, int], FramePrompt] = {}
        for a in self.actions:
            p = out.setdefault((a.obj_id, a.frame), FramePrompt())
            if a.box is not None:
                p.box, p.clicks = a.box, []
            else:
                p.clicks.append(a.click)
        return out

    @property
    def obj_ids(self) -> list[int]:
        return sorted({a.obj_id for a in self.actions})

    def _check_point(self, x: float, y: float) -> None:
        frames = self.require_video()
        if not (0 <= x < frames.width and 0 <= y < frames.height):
            raise PromptError(f"point ({x:g}, {y:g}) is outside the {frames.width}x{frames.height} frame")

    def _check_frame(self, frame: int) -> int:
        frames = self.require_video()
        if not 0 <= int(frame) < len(frames):
            raise PromptError(f"frame {frame} is outside the video (frames 0-{len(frames) - 1})")
        return int(frame)

    def add_click(self, obj_id: int, frame: int, x: float, y: float, positive: bool = True) -> None:
        frame = self._check_frame(frame)
        self._check_point(x, y)
        self._apply(Action(int(obj_id), frame, click=Click(float(x), float(y), POSITIVE if positive else NEGATIVE)))

    def add_box(self, obj_id: int, frame: int, box: tuple[float, float, float, float]) -> None:
        frame = self._check_frame(frame)
        x0, y0, x1, y1 = (float(v) for v in box)
        self._check_point(x0, y0)
        self._check_point(x1, y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise PromptError("a box needs two different corners: top-left, then bottom-right")
        self._apply(Action(int(obj_id), frame, box=(x0, y0, x1, y1)))

    def _apply(self, action: Action) -> None:
        """Give the object's whole prompt on that frame to the predictor (official clear_old_points)."""
        self.actions.append(action)
        try:
            self._send(action.obj_id, action.frame, self.prompts()[(action.obj_id, action.frame)])
        except BaseException:
            self.actions.pop()
            raise
        self.result = None

    def _send(self, obj_id: int, frame: int, prompt: FramePrompt) -> None:
        points = [[c.x, c.y] for c in prompt.clicks] or None
        labels = [c.label for c in prompt.clicks] or None
        with self.model_lock:
            frame_idx, obj_ids, logits = self.predictor.add_new_points_or_box(
                self.state, frame, obj_id, points=points, labels=labels, box=prompt.box)
        self._show(frame_idx, obj_ids, logits)

    def _show(self, frame_idx: int, obj_ids: list[int], logits) -> dict[int, np.ndarray]:
        """Keep a frame's masks for display (bit-packed: a long video's masks stay small)."""
        masks = (logits[:, 0] > 0).cpu().numpy()
        self.masks[frame_idx] = {obj_id: np.packbits(masks[i]) for i, obj_id in enumerate(obj_ids)}
        return {obj_id: masks[i] for i, obj_id in enumerate(obj_ids)}

    def frame_masks(self, frame: int) -> dict[int, np.ndarray]:
        """{obj_id: (H, W) bool} shown on a frame (prompt previews and tracking results)."""
        frames = self.require_video()
        h, w = frames.height, frames.width
        return {obj_id: np.unpackbits(packed, count=h * w).reshape(h, w).astype(bool)
                for obj_id, packed in self.masks.get(frame, {}).items()}

    def undo(self) -> None:
        """Remove the last prompt (the tracking result goes with it)."""
        if not self.actions:
            raise PromptError("nothing to undo")
        self._rebuild(self.actions[:-1])

    def clear_object(self, obj_id: int) -> None:
        if int(obj_id) not in self.obj_ids:
            raise PromptError(f"object {obj_id} has no prompts")
        self._rebuild([a for a in self.actions if a.obj_id != int(obj_id)])

    def reset(self) -> None:
        """Forget every object (the video stays open)."""
        self._rebuild([])

    def _rebuild(self, actions: list[Action]) -> None:
        """A fresh tracking state holding exactly ``actions``, replayed in order."""
        self.require_video()
        with self.model_lock:
            self.predictor.reset_state(self.state)
        self.actions, self.masks, self.result = [], {}, None
        for a in actions:
            self._apply(a)

    # ---- tracking -------------------------------------------------------------------------------------
    def track(self, on_progress: Callable[[int, int], None] | None = None) -> TrackResult:
        """Propagate every object through the video (forward, and backward when the first prompt is not on
        frame 0), write the outputs into a new folder and zip the masks."""
        frames = self.require_video()
        if not self.actions:
            raise PromptError("add a click or a box on an object first")
        first = min(a.frame for a in self.actions)
        passes = [{"start_frame_idx": first, "max_frame_num_to_track": None, "reverse": False}]
        if first > 0:
            passes.append({"start_frame_idx": first, "max_frame_num_to_track": None, "reverse": True})
        self._runs += 1
        folder = self.workdir / f"result-{self._runs}"
        writer = OutputWriter(folder, "png,rle,mp4", frames)
        written: set[int] = set()
        try:
            with self.model_lock:
                total = len(set().union(*(self.predictor.processing_order(self.state, **kw) for kw in passes)))
                for kw in passes:
                    for frame_idx, obj_ids, logits in self.predictor.propagate_in_video(self.state, **kw):
                        if frame_idx in written:  # the reverse pass starts on the prompted frame again
                            continue
                        writer.add(frame_idx, self._show(frame_idx, obj_ids, logits))
                        written.add(frame_idx)
                        if on_progress is not None:
                            on_progress(len(written), total)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        zip_path = folder / "masks.zip"
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
            for png in sorted((folder / "masks").glob("*.png")):
                z.write(png, f"masks/{png.name}")
        self.result = TrackResult(folder, folder / "overlay.mp4", zip_path, folder / "masks.json", len(written))
        for old in self.workdir.glob("result-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        return self.result

    # ---- display --------------------------------------------------------------------------------------
    def frame_image(self, frame: int) -> np.ndarray:
        """(H, W, 3) uint8: the frame with its masks (object colours as in the overlay) and prompt marks."""
        frames = self.require_video()
        frame = self._check_frame(frame)
        rgb = frames.get(frame)
        shown = self.frame_masks(frame)
        labels = None
        if shown:
            labels = np.zeros(rgb.shape[:2], np.uint8)
            for obj_id in sorted(shown):
                labels[shown[obj_id]] = obj_id
        image = Image.fromarray(overlay_labels(rgb, labels))
        draw = ImageDraw.Draw(image)
        palette = davis_palette()
        for (obj_id, f), prompt in self.prompts().items():
            if f != frame:
                continue
            colour = tuple(int(c) for c in palette[obj_id])
            if prompt.box is not None:
                draw.rectangle(prompt.box, outline=colour, width=3)
            for c in prompt.clicks:
                fill = (40, 220, 40) if c.label == POSITIVE else (230, 40, 40)
                r = MARKER_RADIUS
                draw.ellipse((c.x - r, c.y - r, c.x + r, c.y + r), fill=fill, outline=(255, 255, 255), width=2)
        return np.asarray(image)

    def summary(self) -> str:
        """One line per object: its prompts, and the state of the result."""
        if self.frames is None:
            return "No video open."
        lines = [f"{self.video_name}: {len(self.frames)} frames, {self.frames.width}x{self.frames.height}."]
        prompts = self.prompts()
        for obj_id in self.obj_ids:
            parts = []
            for (o, f), p in sorted(prompts.items()):
                if o != obj_id:
                    continue
                pos = sum(c.label == POSITIVE for c in p.clicks)
                neg = len(p.clicks) - pos
                what = (["box"] if p.box is not None else []) + ([f"{pos}+"] if pos else []) + ([f"{neg}-"] if neg else [])
                parts.append(f"frame {f}: {' '.join(what)}")
            lines.append(f"object {obj_id}: " + "; ".join(parts))
        if not self.obj_ids:
            lines.append("No objects yet: click on the frame.")
        if self.result is not None:
            lines.append(f"Tracked {self.result.frames_tracked} frames.")
        return "\n".join(lines)

    # ---- lifetime -------------------------------------------------------------------------------------
    def _close_video(self) -> None:
        if self.frames is not None:
            self.frames.close()
        self.frames, self.state = None, None

    def close(self) -> None:
        """Free the video, the tracking state and the session's files."""
        self._close_video()
        self.actions, self.masks, self.result = [], {}, None
        shutil.rmtree(self.workdir, ignore_errors=True)  # closing twice is harmless


def check_upload(path: str | Path, max_bytes: int) -> None:
    """A clear error for an upload that is too large (gradio's own limit shows a generic message)."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise Effsam2Error(f"{Path(path).name} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
