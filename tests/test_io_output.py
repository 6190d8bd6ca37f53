"""OutputWriter: out-of-order adds produce correct PNGs, masks.json and overlay.mp4."""

from __future__ import annotations

import av
import numpy as np
import pytest

from effsam2.errors import Effsam2Error, PromptError, VideoError
from effsam2.io import (
    ArrayFrameSource,
    FrameIndexError,
    OutputWriter,
    davis_palette,
    labels_from_masks,
    open_frames,
    parse_formats,
    read_label_png,
    read_rle_json,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools + numpy 2
)

H, W, N = 40, 64, 10


def masks_for(i: int) -> dict[int, np.ndarray]:
    """Two objects whose position depends on the frame index; they overlap on some frames."""
    a = np.zeros((H, W), bool)
    a[5:25, 2 + i:20 + i] = True
    b = np.zeros((H, W), bool)
    b[15:35, 30 - i:50 - i] = True
    return {1: a, 2: b}


@pytest.fixture
def source():
    return open_frames([np.full((H, W, 3), 128, np.uint8) for _ in range(N)], fps=10.0)


def test_parse_formats():
    assert parse_formats("mp4,PNG") == ("png", "mp4")
    assert parse_formats(["rle", "png", "rle"]) == ("png", "rle")
    with pytest.raises(Effsam2Error, match="'gif'"):
        parse_formats("png,gif")
    with pytest.raises(Effsam2Error, match="no output format"):
        parse_formats([])


def test_out_of_order_adds_write_everything(tmp_path, source):
    out = tmp_path / "run"
    order = [5, 6, 7, 8, 4, 2, 1]  # forward from the prompt, then backward; frames 0, 3 and 9 never added
    with OutputWriter(out, "png,rle,mp4", source) as writer:
        for i in order:
            writer.add(i, masks_for(i))
            assert (writer.staging_dir / "masks" / f"{i:05d}.png").exists()  # each PNG written as it arrives
        writer.add(5, {1: masks_for(5)[1]})  # the prompt frame again: replaces object set
        assert not out.exists()  # staged beside --out until the run completes
    assert not writer.staging_dir.exists()

    expected = {i: masks_for(i) for i in order}
    expected[5] = {1: masks_for(5)[1]}
    pngs = sorted(p.name for p in (out / "masks").iterdir())
    assert pngs == [f"{i:05d}.png" for i in sorted(order)]
    for i, masks in expected.items():
        np.testing.assert_array_equal(read_label_png(out / "masks" / f"{i:05d}.png"),
                                      labels_from_masks(masks, shape=(H, W)))

    doc = read_rle_json(out / "masks.json")
    assert (doc.height, doc.width, doc.num_frames, doc.fps) == (H, W, N, 10.0)
    assert doc.frame_indices() == sorted(order)
    for i, masks in expected.items():
        got = doc.frame_masks(i)
        assert sorted(got) == sorted(masks)
        for obj_id, m in masks.items():
            np.testing.assert_array_equal(got[obj_id], m)  # overlaps kept in the RLE

    with av.open(str(out / "overlay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # the overlay spans the first to the last frame added (1..8); frame 3 inside it is shown unmarked
    assert len(frames) == 8 and frames[0].shape == (H, W, 3)
    red = davis_palette()[1].astype(int)
    for k, i in enumerate(range(1, 9)):
        pixel = frames[k][15, 10 + i].astype(int)  # inside object 1 (when it was added)
        if i in expected:
            assert pixel[0] > pixel[1] + 30, f"frame {i}: object 1 not drawn"
            assert np.abs(pixel - red).sum() < np.abs(128 - red).sum() - 60
        else:
            assert np.abs(pixel - 128).max() <= 6, "frame without masks must be shown unmarked"
    green_at = frames[5 - 1][25, 38].astype(int)  # object 2 was removed from frame 5 by the re-add
    assert np.abs(green_at - 128).max() <= 6


def test_davis_annotations_in_reverse_order(davis_dir, tmp_path):
    """Real data: a DAVIS folder source; masks from its annotations fed last-to-first."""
    frames = open_frames(davis_dir / "JPEGImages" / "480p" / "blackswan")
    ann_dir = davis_dir / "Annotations" / "480p" / "blackswan"
    indices = [0, 1, len(frames) - 1]
    progress = []
    with OutputWriter(tmp_path, ["png", "rle"], frames) as writer:
        for i in reversed(indices):
            name = frames.frame_names[i]
            writer.add(i, {1: read_label_png(ann_dir / f"{name}.png") > 0})
        written = writer.close(on_frame=progress.append)
    assert progress == []  # no mp4 requested
    assert tmp_path / "masks.json" in written
    for i in indices:
        name = frames.frame_names[i]
        np.testing.assert_array_equal(read_label_png(tmp_path / "masks" / f"{name}.png"),
                                      (read_label_png(ann_dir / f"{name}.png") > 0).astype(np.uint8))
    doc = read_rle_json(tmp_path / "masks.json")
    assert [a["frame_name"] for a in doc.annotations] == [frames.frame_names[i] for i in indices]
    assert not (tmp_path / "overlay.mp4").exists()


def tree(folder) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def test_exception_removes_what_the_run_wrote(tmp_path, source):
    out = tmp_path / "new" / "run"  # neither folder exists yet
    with pytest.raises(RuntimeError), OutputWriter(out, ("png", "rle", "mp4"), source) as writer:
        writer.add(0, masks_for(0))
        writer.add(1, masks_for(1))
        assert (writer.staging_dir / "masks" / "00001.png").exists()
        raise RuntimeError("propagation failed")
    assert tree(tmp_path) == {}  # PNGs and the folders the writer made are gone
    with pytest.raises(ValueError, match="closed"):
        writer.add(1, masks_for(1))


def test_abort_leaves_what_existed_before(tmp_path, source):
    (tmp_path / "masks").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "masks" / "00009.png").write_bytes(b"an earlier run's frame 9")
    (tmp_path / "masks.json").write_text("an earlier run's masks")
    before = tree(tmp_path)
    with pytest.raises(Effsam2Error, match="not empty"):
        OutputWriter(tmp_path, ("png", "rle"), source)  # never mixes two runs in one folder
    with pytest.raises(KeyboardInterrupt), OutputWriter(tmp_path, ("png", "rle"), source, overwrite=True) as w:
        for i in range(3):
            w.add(i, masks_for(i))
        raise KeyboardInterrupt
    assert tree(tmp_path) == before
    assert not w.staging_dir.exists()


def test_overwrite_replaces_the_folder_whole(tmp_path, source):
    out = tmp_path / "out"
    with OutputWriter(out, ("png", "rle"), source) as writer:
        for i in range(6):
            writer.add(i, masks_for(i))
    (out / "notes.txt").write_text("mine")
    with OutputWriter(out, ("png", "rle"), source, overwrite=True) as writer:
        for i in range(3):
            writer.add(i, {1: masks_for(i)[1]})
    assert sorted(tree(out)) == ["masks", "masks.json", "masks/00000.png", "masks/00001.png", "masks/00002.png"]
    assert read_rle_json(out / "masks.json").frame_indices() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folder left


class FailingSource(ArrayFrameSource):
    """In-memory frames whose frame ``bad`` cannot be decoded (as a corrupt file would)."""

    def __init__(self, frames, bad: int):
        super().__init__(frames)
        self.bad = bad

    def _get(self, idx):
        if idx == self.bad:
            raise VideoError(f"frame {idx}: cannot decode")
        return super()._get(idx)


def test_failure_while_closing_removes_masks_json_and_pngs(tmp_path, source):
    frames = FailingSource([source.get(i) for i in range(N)], bad=2)
    writer = OutputWriter(tmp_path / "out", "png,rle,mp4", frames)
    for i in range(N):
        writer.add(i, masks_for(i))
    with pytest.raises(VideoError, match="frame 2"):
        writer.close()  # masks.json is written first, then the overlay fails on frame 2
    assert tree(tmp_path) == {}


def test_abort_after_close_removes_nothing(tmp_path, source):
    writer = OutputWriter(tmp_path / "out", "png,rle", source)
    writer.add(0, masks_for(0))
    written = writer.close()
    writer.abort()
    assert sorted(written) == sorted([tmp_path / "out" / "masks" / "00000.png", tmp_path / "out" / "masks.json"])
    assert all(p.exists() for p in written)


def test_validation(tmp_path, source):
    with pytest.raises(Effsam2Error, match="'avi'"):
        OutputWriter(tmp_path, "avi", source)
    as_file = tmp_path / "file"
    as_file.write_text("x")
    with pytest.raises(Effsam2Error, match="not a folder"):
        OutputWriter(as_file, "png", source)
    writer = OutputWriter(tmp_path / "o", "png", source)
    with pytest.raises(FrameIndexError):
        writer.add(N, {})
    with pytest.raises(PromptError, match="300"):
        writer.add(0, {300: np.zeros((H, W), bool)})
    with pytest.raises(ValueError, match="expected"):
        writer.add(0, {1: np.zeros((H, W + 1), bool)})
    writer.add(0, {})  # no object visible: an all-background PNG
    writer.close()
    assert (read_label_png(tmp_path / "o" / "masks" / "00000.png") == 0).all()
    rle_only = OutputWriter(tmp_path / "r", "rle", source)
    rle_only.add(0, {300: np.ones((H, W), bool)})  # RLE has no 255 limit
    rle_only.close()
    assert read_rle_json(tmp_path / "r" / "masks.json").annotations[0]["obj_id"] == 300


def test_memory_holds_rle_not_arrays(tmp_path, source):
    writer = OutputWriter(tmp_path, "mp4", source)
    for i in range(N):
        writer.add(i, masks_for(i))
    stored = [r["segmentation"]["counts"] for r in writer._store.records()]
    assert len(stored) == 2 * N and all(isinstance(c, str) for c in stored)
    assert sum(len(c) for c in stored) < N * H * W // 20
    writer.close()
