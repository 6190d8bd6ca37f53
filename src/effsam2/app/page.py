"""The page of ``effsam2 app`` (gradio): one :class:`~effsam2.app.session.AppSession` per browser session.

Every handler takes the session from a ``gr.State`` (gradio keeps one per browser tab, deletes it when the
tab closes or after ``idle_seconds`` without events, and then calls ``AppSession.close``), does one thing,
and returns the frame, the object list and a message. User errors (``Effsam2Error``: an unreadable video,
a prompt outside the frame, Track with no object) become the message line; anything else is logged on the
server and shown as one line too, so the page never shows a traceback and the server keeps serving.
"""

import functools
import logging
import threading
from pathlib import Path

import gradio as gr

from effsam2.app.session import AppSession, check_upload
from effsam2.errors import Effsam2Error
from effsam2.io.masks import davis_palette
from effsam2.predictor.video import VideoPredictor

LOG = logging.getLogger("effsam2.app")
NUM_OBJECT_CHOICES = 8
MODES = ("positive click", "negative click", "box (two clicks)")


def _object_label(obj_id: int) -> str:
    return f"object {obj_id}"


def _object_id(label: str) -> int:
    return int(str(label).split()[-1])


def page_css() -> str:
    """Object picker entries in the overlay's colours."""
    rules = []
    for i in range(1, NUM_OBJECT_CHOICES + 1):
        r, g, b = (int(c) for c in davis_palette()[i])
        rules.append(f"#object-picker label:nth-of-type({i}) {{ border-left: 8px solid rgb({r},{g},{b}); }}")
    return "\n".join(rules)


class AppPage:
    """Builds the gradio Blocks for a model; ``sample`` is the clip every new session opens with."""

    def __init__(self, predictor: VideoPredictor, *, sample: Path | None, title: str, max_upload_bytes: int,
                 max_video_frames: int | None, idle_seconds: float):
        self.predictor = predictor
        self.sample = sample
        self.title = title
        self.max_upload_bytes = max_upload_bytes
        self.max_video_frames = max_video_frames
        self.idle_seconds = idle_seconds
        self.model_lock = threading.Lock()  # one model call at a time, over all sessions
        # the sessions alive, so that a closed tab (gradio keeps its state an hour) or the server's end frees
        # them at once; keys: gradio's session hash (None: not known, freed by the idle time)
        self._sessions: dict[int, tuple[str | None, AppSession]] = {}
        self._sessions_lock = threading.Lock()

    # ---- sessions ---------------------------------------------------------------------------------
    def new_session(self, session_hash: str | None = None) -> AppSession:
        session = AppSession(self.predictor, self.model_lock, max_frames=self.max_video_frames)
        with self._sessions_lock:
            self._sessions[id(session)] = (session_hash, session)
        return session

    def end_session(self, session: AppSession | None) -> None:
        """Free a session (gradio's delete_callback: idle time over, or its tab closed)."""
        if isinstance(session, AppSession):
            with self._sessions_lock:
                self._sessions.pop(id(session), None)
            session.close()

    def on_unload(self, request: gr.Request) -> None:
        """The tab was closed: free its session now."""
        with self._sessions_lock:
            ended = [s for h, s in self._sessions.values() if h is not None and h == request.session_hash]
        for session in ended:
            self.end_session(session)

    def end_all(self) -> None:
        """The server stops: free every session."""
        with self._sessions_lock:
            sessions = [s for _, s in self._sessions.values()]
        for session in sessions:
            self.end_session(session)

    @property
    def live_sessions(self) -> int:
        return len(self._sessions)

    # ---- handlers (each returns: session, frame image, slider, object list, message) ---------------
    def _view(self, session: AppSession, frame: int, message: str = ""):
        image = session.frame_image(frame) if session.frames is not None else None
        slider = gr.update(maximum=max(session.num_frames - 1, 1), value=frame)
        return session, image, slider, session.summary(), message

    def _guard(fn):  # a decorator of this class's handlers
        @functools.wraps(fn)
        def handler(self, session, frame, *args, **kwargs):
            if session is None:
                session = self.new_session()
            frame = int(frame or 0)
            try:
                return fn(self, session, frame, *args, **kwargs)
            except Effsam2Error as err:
                return self._view(session, min(frame, max(session.num_frames - 1, 0)), f"⚠ {err}")
            except Exception as err:  # the server keeps serving; the details go to its log
                LOG.exception("effsam2 app: %s failed", fn.__name__)
                return self._view(session, min(frame, max(session.num_frames - 1, 0)),
                                  f"⚠ internal error ({type(err).__name__}); see the server log")
        return handler

    def on_load(self, session: AppSession | None, frame, request: gr.Request):
        if session is None:
            session = self.new_session(request.session_hash)
        return self._open_sample_on_load(session, frame)

    @_guard
    def _open_sample_on_load(self, session: AppSession, frame: int):
        if self.sample is not None and session.frames is None:
            session.open_video(self.sample)
        return self._view(session, 0, "Click on an object to segment it." if session.frames is not None
                          else "Upload a video to start.")

    @_guard
    def on_upload(self, session: AppSession, frame: int, path):
        if path is None:
            return self._view(session, frame)
        check_upload(path, self.max_upload_bytes)
        session.open_video(path, name=Path(path).name)
        return self._view(session, 0, f"Opened {Path(path).name}.")

    @_guard
    def on_sample(self, session: AppSession, frame: int):
        if self.sample is None:
            raise Effsam2Error("no sample clip is bundled")
        session.open_video(self.sample)
        return self._view(session, 0, "Opened the sample clip.")

    @_guard
    def on_scrub(self, session: AppSession, frame: int):
        return self._view(session, frame)

    @_guard
    def on_click(self, session: AppSession, frame: int, obj_label: str, mode: str, evt: gr.SelectData):
        x, y = (float(v) for v in evt.index)
        obj_id = _object_id(obj_label)
        if mode == MODES[2]:
            if session.pending_corner is None:
                session.require_video()
                session.pending_corner = (x, y)
                return self._view(session, frame, "Box: now click the opposite corner.")
            (x0, y0), session.pending_corner = session.pending_corner, None
            session.add_box(obj_id, frame, (min(x0, x), min(y0, y), max(x0, x), max(y0, y)))
            return self._view(session, frame, f"Box added to object {obj_id}.")
        session.pending_corner = None
        session.add_click(obj_id, frame, x, y, positive=mode == MODES[0])
        return self._view(session, frame, f"{mode.capitalize()} at ({x:.0f}, {y:.0f}) for object {obj_id}.")

    @_guard
    def on_undo(self, session: AppSession, frame: int):
        session.undo()
        return self._view(session, frame, "Undone.")

    @_guard
    def on_clear(self, session: AppSession, frame: int, obj_label: str):
        session.clear_object(_object_id(obj_label))
        return self._view(session, frame, f"Cleared {obj_label}.")

    @_guard
    def on_reset(self, session: AppSession, frame: int):
        session.reset()
        return self._view(session, frame, "All objects removed.")

    def on_track(self, session: AppSession | None, frame, progress=gr.Progress()):  # noqa: B008 (gradio's idiom)
        if session is None:
            session = self.new_session()
        try:
            result = session.track(lambda done, total: progress((done, total), desc="tracking", unit="frames"))
        except Effsam2Error as err:
            return (*self._view(session, int(frame or 0), f"⚠ {err}"), None, None, None)
        except Exception as err:
            LOG.exception("effsam2 app: track failed")
            return (*self._view(session, int(frame or 0), f"⚠ internal error ({type(err).__name__}); "
                                "see the server log"), None, None, None)
        message = f"Tracked {result.frames_tracked} frames: overlay video and downloads below."
        return (*self._view(session, int(frame or 0), message), str(result.overlay_video),
                str(result.masks_zip), str(result.rle_json))

    # ---- layout -----------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        with gr.Blocks(title=self.title, delete_cache=(600, int(self.idle_seconds))) as blocks:
            session = gr.State(None, time_to_live=self.idle_seconds, delete_callback=self.end_session)
            gr.Markdown(f"## {self.title}\nOpen a video, pick an object, click on it (or draw a box with two "
                        "clicks), then press **Track**.")
            with gr.Row():
                with gr.Column(scale=3):
                    image = gr.Image(label="frame: click to prompt", interactive=False, elem_id="frame",
                                     format="png", buttons=[])
                    slider = gr.Slider(0, 1, step=1, value=0, label="frame", elem_id="frame-slider")
                with gr.Column(scale=1):
                    upload = gr.File(label="open a video", file_types=["video"], type="filepath",
                                     elem_id="upload")
                    sample_btn = gr.Button("sample clip", elem_id="sample")
                    obj = gr.Radio([_object_label(i) for i in range(1, NUM_OBJECT_CHOICES + 1)],
                                   value=_object_label(1), label="object", elem_id="object-picker")
                    mode = gr.Radio(list(MODES), value=MODES[0], label="click adds", elem_id="mode")
                    with gr.Row():
                        undo = gr.Button("undo", elem_id="undo")
                        clear = gr.Button("clear object", elem_id="clear")
                        reset = gr.Button("reset", elem_id="reset")
                    track = gr.Button("Track", variant="primary", elem_id="track")
                    status = gr.Textbox(label="objects", lines=4, interactive=False, elem_id="status")
                    message = gr.Markdown(elem_id="message")
            with gr.Row():
                overlay = gr.Video(label="overlay", interactive=False, elem_id="overlay")
                masks_zip = gr.File(label="masks (zip of palette PNGs)", interactive=False, elem_id="masks-zip")
                rle_json = gr.File(label="masks (COCO RLE JSON)", interactive=False, elem_id="rle-json")

            view = [session, image, slider, status, message]
            blocks.load(self.on_load, [session, slider], view)
            upload.upload(self.on_upload, [session, slider, upload], view)
            sample_btn.click(self.on_sample, [session, slider], view)
            slider.release(self.on_scrub, [session, slider], view)
            image.select(self.on_click, [session, slider, obj, mode], view)
            undo.click(self.on_undo, [session, slider], view)
            clear.click(self.on_clear, [session, slider, obj], view)
            reset.click(self.on_reset, [session, slider], view)
            track.click(self.on_track, [session, slider], [*view, overlay, masks_zip, rle_json])
            blocks.unload(self.on_unload)
        return blocks
