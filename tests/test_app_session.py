"""The app's per-session logic (no browser): prompts, undo, tracking outputs, isolation, bad input."""

import shutil
import threading
import zipfile

import av
import numpy as np
import pytest
from PIL import Image

from effsam2.app.session import AppSession, check_upload
from effsam2.build import build_model
from effsam2.errors import Effsam2Error, PromptError, VideoError
from effsam2.predictor.video import VideoPredictor

NUM_FRAMES = 4


@pytest.fixture(scope="module")
def predictor():
    return VideoPredictor(build_model())


@pytest.fixture(scope="module")
def clip(davis_dir, tmp_path_factory):
    """The first frames of DAVIS 'cows' and a click at the interior point of its first mask."""
    folder = tmp_path_factory.mktemp("cows")
    for f in sorted((davis_dir / "JPEGImages" / "480p" / "cows").glob("*.jpg"))[:NUM_FRAMES]:
        shutil.copy(f, folder / f.name)
    gt = np.array(Image.open(davis_dir / "Annotations" / "480p" / "cows" / "00000.png")) > 0
    ys, xs = np.nonzero(gt)
    centre = np.array([xs.mean(), ys.mean()])
    inside = np.stack([xs, ys], 1)
    x, y = inside[np.argmin(((inside - centre) ** 2).sum(1))]  # the object pixel nearest its centroid
    return folder, (int(x), int(y))


def _session(predictor, lock=None) -> AppSession:
    return AppSession(predictor, lock or threading.Lock())


def test_click_shows_a_mask_on_the_point_and_track_writes_every_output(predictor, clip):
    folder, (x, y) = clip
    s = _session(predictor)
    try:
        s.open_video(folder)
        s.add_click(1, 0, x, y)
        shown = s.frame_masks(0)
        assert list(shown) == [1] and shown[1][y, x]
        assert 0.005 < shown[1].mean() < 0.6  # a real object mask, neither empty nor the whole frame
        image = s.frame_image(0)
        assert image.shape == (480, 854, 3) and not np.array_equal(image, s.frames.get(0))

        progress = []
        result = s.track(lambda done, total: progress.append((done, total)))
        assert progress[-1] == (NUM_FRAMES, NUM_FRAMES) and result.frames_tracked == NUM_FRAMES
        with zipfile.ZipFile(result.masks_zip) as z:
            names = sorted(z.namelist())
            assert names == [f"masks/{i:05d}.png" for i in range(NUM_FRAMES)]
            with z.open(names[0]) as f:
                labels = np.array(Image.open(f))
        assert labels[y, x] == 1 and set(np.unique(labels)) == {0, 1}
        assert result.rle_json.stat().st_size > 0
        with av.open(str(result.overlay_video)) as video:
            assert sum(1 for _ in video.decode(video=0)) == NUM_FRAMES
        # scrubbing after tracking shows the tracked masks
        assert all(1 in s.frame_masks(i) for i in range(NUM_FRAMES))
    finally:
        s.close()
    assert not s.workdir.exists()


def test_undo_clear_and_reset_follow_the_listed_prompts(predictor, clip):
    folder, (x, y) = clip
    s = _session(predictor)
    try:
        s.open_video(folder)
        s.add_click(1, 0, x, y)
        after_one = s.frame_masks(0)[1]
        s.add_click(1, 0, x, y - 40, positive=False)
        assert [c.label for c in s.prompts()[(1, 0)].clicks] == [1, 0]
        s.undo()
        assert [c.label for c in s.prompts()[(1, 0)].clicks] == [1]
        assert np.array_equal(s.frame_masks(0)[1], after_one)
        s.add_box(2, 0, (10, 10, 200, 150))
        assert s.obj_ids == [1, 2] and s.prompts()[(2, 0)].box == (10.0, 10.0, 200.0, 150.0)
        s.clear_object(1)
        assert s.obj_ids == [2] and list(s.frame_masks(0)) == [2]
        with pytest.raises(PromptError, match="object 1 has no prompts"):
            s.clear_object(1)
        s.reset()
        assert s.obj_ids == [] and s.frame_masks(0) == {}
        with pytest.raises(PromptError, match="nothing to undo"):
            s.undo()
    finally:
        s.close()


def test_two_sessions_on_one_model_do_not_see_each_other(predictor, clip):
    folder, (x, y) = clip
    lock = threading.Lock()
    alone, a, b = _session(predictor, lock), _session(predictor, lock), _session(predictor, lock)
    try:
        alone.open_video(folder)
        alone.add_click(1, 0, x, y)
        expected = alone.track()

        a.open_video(folder)
        b.open_video(folder)
        a.add_click(1, 0, x, y)
        b.add_click(1, 0, 30, 30)  # the same object id, elsewhere
        b.add_click(2, 1, x, y)
        assert a.obj_ids == [1] and b.obj_ids == [1, 2]
        assert sorted(a.state.objects) == [1]
        got = a.track()
        b.track()
        for i in range(NUM_FRAMES):  # a's result is exactly what it is without b
            want = np.array(Image.open(expected.folder / "masks" / f"{i:05d}.png"))
            assert np.array_equal(np.array(Image.open(got.folder / "masks" / f"{i:05d}.png")), want)
        assert a.workdir != b.workdir
    finally:
        for s in (alone, a, b):
            s.close()


def test_bad_input_is_one_message_and_changes_nothing(predictor, clip, tmp_path):
    folder, (x, y) = clip
    s = _session(predictor)
    try:
        with pytest.raises(PromptError, match="open a video first"):
            s.add_click(1, 0, 5, 5)
        s.open_video(folder)
        s.add_click(1, 0, x, y)
        not_a_video = tmp_path / "notes.mp4"
        not_a_video.write_text("this is not a video")
        with pytest.raises(VideoError):
            s.open_video(not_a_video)
        assert s.num_frames == NUM_FRAMES and s.obj_ids == [1]  # the open video and its prompts stay
        with pytest.raises(PromptError, match="outside the 854x480 frame"):
            s.add_click(1, 0, 900, 10)
        with pytest.raises(PromptError, match="outside the video"):
            s.add_click(1, NUM_FRAMES, x, y)
        with pytest.raises(PromptError, match="two different corners"):
            s.add_box(1, 0, (50, 50, 50, 50))
        assert len(s.actions) == 1
        s.reset()
        with pytest.raises(PromptError, match="add a click or a box"):
            s.track()
    finally:
        s.close()


def test_uploads_over_the_limit_are_refused_with_their_size(tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (3 * 2**20))
    check_upload(big, 4 * 2**20)  # under the limit: accepted
    with pytest.raises(Effsam2Error, match=r"big.mp4 is 3.0 MB; the limit is 2 MB"):
        check_upload(big, 2 * 2**20)
