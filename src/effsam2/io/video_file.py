"""Lazy random-access reading of video files with PyAV (mp4, mov, mkv, webm, avi, gif, ...).

How frames are identified
-------------------------
Opening demuxes the video stream once (reads packets, decodes nothing) to list every frame's
presentation timestamp (pts) and the keyframes. Frame ``i`` is the frame with the i-th smallest
pts. Every decoded frame is numbered by looking its pts up in that table, never by counting
frames since a seek, so frame ``i`` has the same pixels whether it is reached by decoding
forward from the start, after a seek, forward, backward or at random.

For streams whose packets lack timestamps or repeat them (rare; some AVI files), frames are
numbered by counting from the start of the file instead, and every backward jump restarts
decoding from the beginning (correct, slower).

Access cost
-----------
- Sequential forward ``get(i), get(i+1), ...`` keeps the decoder running: one decode per frame.
- A jump backward (or forward past a keyframe) seeks to the keyframe at or before the target and
  decodes forward from there. Frames before the landing keyframe in presentation order
  (open-GOP leading frames) are discarded, as they may reference data from before the seek.
- When a jump goes backward, the frames just before the target are kept too (up to the cache
  capacity when stepping back one frame, up to 16 for other backward jumps), so a reverse sweep
  costs one seek per ``capacity`` frames instead of one per frame.

Memory is bounded: at most ``capacity = max(2, cache_bytes // (H * W * 3))`` decoded RGB frames
are cached (LRU), plus what the FFmpeg decoder holds internally (a few frames).

Frame count: ``len()`` is the number of frame packets found when opening. A damaged file may
contain packets that do not decode; ``get(k)`` for such a frame raises ``VideoError`` naming k.
Rotation metadata (phone videos) is applied, so frames come out upright as players show them.
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import av
import numpy as np

from effsam2.errors import VideoError
from effsam2.io.frames import FrameSource, default_frame_names

__all__ = ["DEFAULT_CACHE_BYTES", "NotAVideoError", "VideoFileSource"]

#: Default budget for cached decoded frames (about 90 frames of 1280x720).
DEFAULT_CACHE_BYTES = 256 * 2**20
_JUMP_WINDOW = 16  # frames kept before the target of a backward jump that is not a reverse step


class NotAVideoError(VideoError):
    """The file is not something PyAV can open as a video (not a media file, or no video stream)."""


@dataclass(frozen=True)
class _Keyframe:
    pts: int
    dts: int | None
    first_idx: int  # index of the first frame at or after this keyframe in presentation order


def _reason(e: BaseException) -> str:
    """One line describing ``e``; FFmpeg errors without the errno and repeated file name."""
    text = getattr(e, "strerror", None) if isinstance(e, av.FFmpegError) else None
    text = (text or str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


class VideoFileSource(FrameSource):
    """Frames of the first video stream of a media file, decoded on demand.

    Args:
        path: the video file.
        cache_bytes: budget for cached decoded RGB frames (see module docstring).
        decoder_threads: FFmpeg decoder threads, 0 = let FFmpeg choose (one per core).

    Extra attributes: ``path``, ``capacity`` (max cached frames), ``rotation`` (quarter turns
    counter-clockwise applied to the decoded pictures, 0..3), ``seeks`` (number of decode passes
    started so far, for diagnostics), ``numbering`` ("pts" or "count", see module docstring).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, cache_bytes: int = DEFAULT_CACHE_BYTES, decoder_threads: int = 0
    ):
        self.path = Path(path)
        self.name = str(self.path)
        self._threads = decoder_threads
        self._container: av.container.InputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._gen: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._pos = -1  # index of the last frame the running decode pass produced
        self._last_requested = -1
        self._last_error: str | None = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.seeks = 0
        self._index_error: str | None = None
        self._reopen()
        try:
            self._build_index()
            self._probe_first_frame(cache_bytes)
        except BaseException:
            self.close()
            raise
        self.frame_names = default_frame_names(len(self))

    # ----------------------------------------------------------------------------- opening
    def _reopen(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError) as e:
            raise NotAVideoError(f"{self.path}: not a readable video file ({_reason(e)})") from None
        streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not streams:
            container.close()
            raise NotAVideoError(f"{self.path}: file has no video stream")
        stream = streams[0]
        stream.thread_type = "AUTO"  # frame + slice threads: several times faster on long GOPs
        stream.codec_context.thread_count = self._threads
        self._container, self._stream = container, stream

    def _build_index(self) -> None:
        """Demux all packets once (no decoding) to find every frame's pts and the keyframes."""
        pts: list[int | None] = []
        keys: list[tuple[int | None, int | None]] = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # end-of-stream flush marker
                    continue
                if packet.is_keyframe:
                    keys.append((packet.pts, packet.dts))
                if not packet.is_discard:  # e.g. before an mp4 edit list's start: decoded, never shown
                    pts.append(packet.pts)
        except av.FFmpegError as e:
            # Damaged or truncated file: keep the frames found so far; decoding reports the rest.
            self._index_error = _reason(e)
            if not pts:
                raise VideoError(f"{self.path}: cannot read video packets ({_reason(e)})") from None
        if not pts:
            raise VideoError(f"{self.path}: video stream has no frames")
        self._by_pts = all(p is not None for p in pts) and len(set(pts)) == len(pts)
        if self._by_pts:
            self._set_pts_table(sorted(pts), [k for k in keys if k[0] is not None])
        else:
            self._n = len(pts)
            self._keys = []

    def _set_pts_table(self, pts: list[int], keys: list[tuple[int, int | None]]) -> None:
        self._pts = pts
        self._idx_of = {p: i for i, p in enumerate(pts)}
        self._n = len(pts)
        kf = sorted({(p, d) for p, d in keys})
        self._keys = [_Keyframe(p, d, bisect.bisect_left(pts, p)) for p, d in kf]
        self._key_first = [k.first_idx for k in self._keys]

    def _probe_first_frame(self, cache_bytes: int) -> None:
        """Decode the first frame: proves the stream decodes and gives the picture size.

        The decode pass is kept running and the frame cached, so reading from frame 0 onward
        continues from here without a second start.
        """
        gen = self._decode_pass(None, None)  # reopens: indexing consumed the demuxer
        _, first = next(gen, (None, None))
        if first is None:
            detail = f" ({self._last_error})" if self._last_error else ""
            raise VideoError(f"{self.path}: no decodable video frames{detail}")
        keep_pass = True
        if self._by_pts:
            # Frames listed before the first one the decoder shows can never be produced
            # (e.g. undecodable leading frames): drop them so that index 0 is the first picture.
            start = self._idx_of.get(first.pts, -1)
            if start > 0:
                self._set_pts_table(self._pts[start:], [(k.pts, k.dts) for k in self._keys])
            elif start < 0:  # decoder timestamps do not match the packets': number by counting
                self._by_pts, self._keys, keep_pass = False, [], False
        self._coded_size = (first.height, first.width)
        rotation = first.rotation if isinstance(first.rotation, (int, float)) else 0
        self.rotation = round(rotation / 90) % 4 if rotation % 90 == 0 else 0
        h, w = self._coded_size
        self.height, self.width = (w, h) if self.rotation % 2 else (h, w)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.capacity = max(2, int(cache_bytes) // (self.height * self.width * 3))
        if keep_pass:
            self._gen, self._pos = gen, 0
            self._remember(0, self._to_rgb(first))

    # ------------------------------------------------------------------------- decoding
    def _packets(self) -> Iterator[av.Packet]:
        """Demuxed packets of the stream; a demuxing error ends the stream (recorded)."""
        it = self._container.demux(self._stream)
        while True:
            try:
                packet = next(it)
            except StopIteration:
                return
            except av.FFmpegError as e:
                self._last_error = f"demuxing failed: {_reason(e)}"
                return
            if packet.size:
                yield packet

    def _decode_packets(self, packets: Iterator[av.Packet], safe_pts: int | None):
        """(index, frame) pairs in presentation order; frames before ``safe_pts`` are dropped."""
        codec = self._stream.codec_context
        count = 0  # used when numbering by counting (passes then always start at the file start)
        for packet in chain(packets, [None]):  # None drains the decoder at the end
            try:
                frames = codec.decode(packet)
            except av.FFmpegError as e:
                # A damaged packet: skip it; the frame it carried will be reported missing.
                self._last_error = f"decoding failed near pts {getattr(packet, 'pts', None)}: {_reason(e)}"
                continue
            for frame in frames:
                if not self._by_pts:
                    yield count, frame
                    count += 1
                    continue
                if frame.pts is None or (safe_pts is not None and frame.pts < safe_pts):
                    continue
                idx = self._idx_of.get(frame.pts)
                if idx is not None:
                    yield idx, frame

    def _decode_pass(self, key: _Keyframe | None, target_pts: int | None):
        """Start decoding at ``key`` (None: the file start), landing at or before ``target_pts``."""
        self.seeks += 1
        self._last_error = None
        if key is not None:
            tried = []
            for ts in (key.pts, key.dts):
                if ts is None or ts in tried:
                    continue
                tried.append(ts)
                try:
                    self._container.seek(ts, stream=self._stream, backward=True)
                except av.FFmpegError:
                    continue
                packets = self._packets()
                first = next(packets, None)
                # Only a keyframe at or before the target is a safe place to start decoding.
                if first is not None and first.is_keyframe and first.pts is not None and first.pts <= target_pts:
                    yield from self._decode_packets(chain([first], packets), safe_pts=first.pts)
                    return
        self._reopen()  # the always-correct fallback: decode from the very beginning
        yield from self._decode_packets(self._packets(), safe_pts=None)

    def _start_pass(self, idx: int) -> None:
        key = None
        if self._by_pts and self._keys:
            k = bisect.bisect_right(self._key_first, idx) - 1
            if k >= 0:
                key = self._keys[k]
        self._gen = self._decode_pass(key, self._pts[idx] if self._by_pts else None)
        self._pos = -1

    def _seek_is_cheaper(self, idx: int) -> bool:
        """True if a keyframe lies between the decoder's position and ``idx`` (skip ahead)."""
        if not self._by_pts or not self._keys:
            return False
        k = bisect.bisect_right(self._key_first, idx) - 1
        return k >= 0 and self._keys[k].first_idx > self._pos + 1

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        h, w = self._coded_size
        # Explicit size: a mid-stream resolution change is rescaled to the first frame's size.
        rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
        if self.rotation:
            rgb = np.rot90(rgb, self.rotation)
        return np.ascontiguousarray(rgb)

    def _remember(self, idx: int, rgb: np.ndarray) -> None:
        self._cache[idx] = rgb
        self._cache.move_to_end(idx)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    def _get(self, idx: int) -> np.ndarray:
        if self._container is None:
            raise ValueError(f"{self.path}: frame source is closed")
        previous, self._last_requested = self._last_requested, idx
        cached = self._cache.get(idx)
        if cached is not None:
            self._cache.move_to_end(idx)
            return cached.copy()
        if self._gen is None or idx <= self._pos or self._seek_is_cheaper(idx):
            self._start_pass(idx)
        # Going backward, also keep the frames just before idx: they are likely next. A full
        # cache window for a reverse sweep (idx right before the previous request), a short one
        # for other backward jumps, whose next request may not be idx - 1 (conversion costs).
        if idx == previous - 1:
            keep_from = idx - self.capacity + 1
        elif idx < previous:
            keep_from = idx - min(self.capacity, _JUMP_WINDOW) + 1
        else:
            keep_from = idx
        try:
            for fidx, frame in self._gen:
                if fidx <= self._pos:  # out-of-order output of a broken stream: ignore
                    continue
                self._pos = fidx
                if fidx > idx:
                    break
                if fidx >= keep_from:
                    rgb = self._to_rgb(frame)
                    self._remember(fidx, rgb)
                    if fidx == idx:
                        return rgb.copy()
            else:
                self._gen = None
        except BaseException:
            # e.g. KeyboardInterrupt inside the decoder: that pass is dead; the next get() must
            # start a new one rather than mistake the dead generator for the end of the stream.
            self._gen = None
            raise
        detail = self._last_error or (
            f"demuxing stopped early: {self._index_error}" if self._index_error else "file truncated or damaged?"
        )
        raise VideoError(f"{self.path}: cannot decode frame {idx} of {len(self)} ({detail})")

    # ------------------------------------------------------------------------- interface
    def __len__(self) -> int:
        return self._n

    @property
    def numbering(self) -> str:
        """How frames are identified: "pts" (timestamps, seekable) or "count" (from the start)."""
        return "pts" if self._by_pts else "count"

    @property
    def cached_frames(self) -> int:
        """Number of decoded frames currently cached (always <= ``capacity``)."""
        return len(self._cache)

    def close(self) -> None:
        self._gen = None
        self._cache.clear()
        if self._container is not None:
            self._container.close()
            self._container = None
