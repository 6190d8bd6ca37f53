"""Dataset readers: the real DAVIS-2016 folder, tiny DAVIS-2017 and SA-V layouts, error cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effsam2.errors import DatasetError
from effsam2.io.datasets import DavisSequence, SavSequence, open_dataset, read_split_file
from effsam2.io.masks import save_label_png as write_label_png

DAVIS16 = [
    "blackswan", "breakdance", "car-roundabout", "car-shadow", "cows", "dance-twirl", "dog",
    "drift-chicane", "drift-straight", "goat", "horsejump-high", "kite-surf", "motocross-jump",
    "parkour", "soapbox",
]  # fmt: skip


def _jpg(path: Path, h: int = 12, w: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 120, 30)).save(path)


def make_davis17(root: Path, n_frames: int = 5) -> Path:
    """Two sequences: 'two' with objects 1 and 2 (and void 255 on frame 1), 'one' with object 1."""
    for seq, n_obj in (("two", 2), ("one", 1)):
        for t in range(n_frames):
            labels = np.zeros((12, 16), np.uint8)
            labels[2:6, 1 + t : 5 + t] = 1
            if n_obj == 2:
                labels[7:11, 8:12] = 2
                if t == 1:
                    labels[0, :] = 255  # void row: must read as background
            (root / "Annotations" / "480p" / seq).mkdir(parents=True, exist_ok=True)
            write_label_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", labels)
            _jpg(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("two\none\n")
    return root


def make_sav(root: Path) -> Path:
    """Video 'sav_000001': 13 frames at 24 fps; object 000 on frames 0,4,8,12; 001 from frame 4."""
    vid = "sav_000001"
    for t in range(13):
        _jpg(root / "JPEGImages_24fps" / vid / f"{t:05d}.jpg")
    for obj, frames in (("000", (0, 4, 8, 12)), ("001", (4, 8, 12))):
        d = root / "Annotations_6fps" / vid / obj
        d.mkdir(parents=True)
        for t in frames:
            m = np.zeros((12, 16), np.uint8)
            if obj == "000":
                m[1:5, 1:5] = 255
            else:
                m[6:10, 6 + t // 4 : 10 + t // 4] = 255
            Image.frombytes("L", (16, 12), m.tobytes()).save(d / f"{t:05d}.png")
    (root / "sav_val.txt").write_text(f"{vid}\n")
    return root


# ---------------------------------------------------------------- real DAVIS-2016


def test_davis2016_layout_and_sequences(davis_dir):
    ds = open_dataset(davis_dir)
    assert ds.layout == "davis"
    assert ds.annotations_dir == davis_dir / "Annotations" / "480p"
    assert ds.images_dir == davis_dir / "JPEGImages" / "480p"
    assert ds.all_sequences() == DAVIS16
    assert ds.sequence_names() == DAVIS16
    assert ds.sequence_names("val") == DAVIS16  # ImageSets/val.txt


def test_davis2016_sequence(davis_dir):
    seq = open_dataset(davis_dir).sequence("blackswan")
    assert isinstance(seq, DavisSequence)
    assert len(seq.frames) == 50 and seq.frames[0] == "00000" and seq.frames[-1] == "00049"
    assert seq.object_ids == (1,)
    assert seq.annotated_frames(1) == seq.frames
    masks = seq.gt_masks("00010")
    assert list(masks) == [1]
    expected = np.array(Image.open(davis_dir / "Annotations/480p/blackswan/00010.png")) > 0
    assert masks[1].dtype == bool and np.array_equal(masks[1], expected)
    assert seq.image_path("00010") == davis_dir / "JPEGImages/480p/blackswan/00010.jpg"


def test_split_file_formats(davis_dir, tmp_path):
    official = tmp_path / "official_val.txt"
    official.write_text(
        "".join(
            f"/JPEGImages/480p/{s}/{t:05d}.jpg /Annotations/480p/{s}/{t:05d}.png\n"
            for s in ("dog", "cows")
            for t in range(3)
        )
    )
    simple = tmp_path / "simple.txt"
    simple.write_text("# two sequences\ngoat\n\nsoapbox  \n")
    ds = open_dataset(davis_dir)
    assert ds.sequence_names(official) == ["dog", "cows"]
    assert ds.sequence_names(str(simple)) == ["goat", "soapbox"]
    assert read_split_file(official) == ["dog", "cows"]
    missing = tmp_path / "bad.txt"
    missing.write_text("dog\nnot-a-sequence\n")
    with pytest.raises(DatasetError, match="not-a-sequence"):
        ds.sequence_names(missing)
    with pytest.raises(DatasetError, match="nosuchsplit"):
        ds.sequence_names("nosuchsplit")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(DatasetError, match="empty.txt"):
        ds.sequence_names(tmp_path / "empty.txt")


def test_bare_annotation_folder(davis_dir):
    ds = open_dataset(davis_dir / "Annotations" / "480p")
    assert ds.layout == "davis" and ds.images_dir is None
    seq = ds.sequence("car-shadow")
    assert len(seq.frames) == 40 and seq.image_path(seq.frames[0]) is None


# ---------------------------------------------------------------- DAVIS-2017 palette layout


def test_davis2017_palette_layout(tmp_path):
    ds = open_dataset(make_davis17(tmp_path))
    assert ds.layout == "davis"
    assert ds.sequence_names("val") == ["two", "one"]  # found in ImageSets/2017
    assert ds.all_sequences() == ["one", "two"]
    seq = ds.sequence("two")
    assert seq.object_ids == (1, 2)
    assert seq.frames == tuple(f"{t:05d}" for t in range(5))
    masks = seq.gt_masks("00001")
    assert set(masks) == {1, 2}
    assert masks[1].sum() == 16 and masks[2].sum() == 16
    assert not masks[1][0].any() and not masks[2][0].any()  # void row is background
    assert seq.label_map("00001")[0].max() == 0
    assert ds.sequence("one").object_ids == (1,)


def test_split_name_in_official_davis2016_folder(tmp_path):
    """``--split trainval`` finds ImageSets/480p/trainval.txt in the official path-pair format."""
    root = make_davis17(tmp_path)
    (root / "ImageSets" / "480p").mkdir()
    (root / "ImageSets" / "480p" / "trainval.txt").write_text(
        "/JPEGImages/480p/one/00000.jpg /Annotations/480p/one/00000.png\n"
        "/JPEGImages/480p/one/00001.jpg /Annotations/480p/one/00001.png\n"
    )
    assert open_dataset(root).sequence_names("trainval") == ["one"]
    assert open_dataset(root).sequence_names("2017/val") == ["two", "one"]


def test_davis_objects_come_from_first_frame(tmp_path):
    """Official rule: objects are 1..max id of the first frame, even if later frames add ids."""
    root = make_davis17(tmp_path)
    late = np.zeros((12, 16), np.uint8)
    late[0:2, 0:2] = 3
    write_label_png(root / "Annotations/480p/one/00003.png", late)
    assert open_dataset(root).sequence("one").object_ids == (1,)
    empty = root / "Annotations/480p/one/00000.png"
    write_label_png(empty, np.zeros((12, 16), np.uint8))
    with pytest.raises(DatasetError, match="00000.png"):
        _ = open_dataset(root).sequence("one").object_ids


def test_davis_missing_and_corrupt_mask(tmp_path):
    root = make_davis17(tmp_path)
    (root / "Annotations/480p/two/00003.png").unlink()
    seq = open_dataset(root).sequence("two")
    assert "00003" in seq.annotated_frames(1)  # every image frame needs a mask
    with pytest.raises(DatasetError, match=r"not found: .*two/00003\.png"):
        seq.gt_masks("00003")
    (root / "Annotations/480p/two/00002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError, match=r"two/00002\.png"):
        seq.gt_masks("00002")


# ---------------------------------------------------------------- SA-V layout


def test_sav_layout(tmp_path):
    root = make_sav(tmp_path)
    ds = open_dataset(root)
    assert ds.layout == "sav"
    assert ds.annotations_dir == root / "Annotations_6fps"
    assert ds.sequence_names("val") == ["sav_000001"]  # sav_val.txt
    assert ds.sequence_names(root / "sav_val.txt") == ["sav_000001"]
    seq = ds.sequence("sav_000001")
    assert isinstance(seq, SavSequence)
    assert seq.object_ids == (0, 1)
    assert len(seq.frames) == 13
    assert seq.annotated_frames(0) == ("00000", "00004", "00008", "00012")
    assert seq.annotated_frames(1) == ("00004", "00008", "00012")
    assert set(seq.gt_masks("00000")) == {0}
    masks = seq.gt_masks("00008")
    assert set(masks) == {0, 1} and masks[0].sum() == 16 and masks[1][6:10, 8:12].all()
    assert seq.gt_masks("00001") == {}  # not an annotated frame
    # the bare Annotations_6fps folder (the SA-V evaluator's gt_root) is recognised too
    bare = open_dataset(root / "Annotations_6fps")
    assert bare.layout == "sav" and bare.sequence("sav_000001").frames == ("00000", "00004", "00008", "00012")


def test_sav_corrupt_mask(tmp_path):
    root = make_sav(tmp_path)
    bad = root / "Annotations_6fps/sav_000001/001/00008.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"001/00008\.png"):
        open_dataset(root).sequence("sav_000001").gt_masks("00008")


def test_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no annotated sequences"):
        open_dataset(tmp_path / "empty")
    root = make_sav(tmp_path / "sav")
    with pytest.raises(DatasetError, match="sav layout"):
        open_dataset(root, layout="davis")
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(root).sequence("missing")


def test_davis2016_copy_missing_mask(davis_dir, tmp_path):
    """A real DAVIS-2016 sequence copied with one mask deleted: reading that frame names the file."""
    root = tmp_path / "d16"
    for sub in ("Annotations/480p/car-shadow", "JPEGImages/480p/car-shadow"):
        shutil.copytree(davis_dir / sub, root / sub)
    (root / "Annotations/480p/car-shadow/00017.png").unlink()
    seq = open_dataset(root).sequence("car-shadow")
    assert len(seq.frames) == 40
    with pytest.raises(DatasetError, match=r"car-shadow/00017\.png"):
        seq.gt_masks("00017")
