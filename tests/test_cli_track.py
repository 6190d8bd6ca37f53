"""`effsam2 track` end to end on a real mp4, and every user error through the CLI (exit 2, one line)."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from effsam2.cli import main

BOX = "600,200,800,450"


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def track_args(clip, ckpt, out, *extra):
    return ["track", str(clip), "--model", "sam2.1_hiera_t", "--checkpoint", str(ckpt), "--image-size", "256",
            "--out", str(out), "--no-progress", *extra]


def test_track_writes_every_format_consistently(short_clip, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(track_args(short_clip, tiny_checkpoint, out, "--point", "210,350", "--point",
                                           "330,470,0", "--obj-id", "2", "--box", BOX,
                                           "--format", "png,rle,mp4"), capsys)
    assert code == 0, err
    pngs = sorted((out / "masks").glob("*.png"))
    assert len(pngs) == 10
    labels = [np.array(Image.open(p)) for p in pngs]
    assert all(Image.open(p).mode == "P" for p in pngs)
    assert set(np.unique(np.stack(labels))) <= {0, 1, 2}
    for obj in (1, 2):
        assert sum((lab == obj).any() for lab in labels) >= 5, f"object {obj} is missing on most frames"

    doc = json.loads((out / "masks.json").read_text())
    records = doc["annotations"] if isinstance(doc, dict) else doc
    by_frame: dict[int, dict[int, np.ndarray]] = {}
    for rec in records:
        rle = dict(rec["segmentation"])
        rle["counts"] = rle["counts"].encode()
        by_frame.setdefault(rec["frame_index"], {})[rec["obj_id"]] = mask_utils.decode(rle).astype(bool)
    for i, lab in enumerate(labels):
        for obj, mask in by_frame.get(i, {}).items():
            # overlaps resolve to one id in the PNG; everywhere the PNG shows obj, the RLE mask has it
            assert mask[lab == obj].all()
            assert (lab[mask] > 0).all()
    with av.open(str(out / "overlay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (540, 960, 3)
    assert "tracked 2 object(s) over 10 frame(s)" in stdout


def test_prompt_on_a_later_frame_tracks_both_ways(short_clip, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(track_args(short_clip, tiny_checkpoint, out, "--frame", "4", "--box", BOX,
                                           "--format", "png"), capsys)
    assert code == 0, err
    assert len(list((out / "masks").glob("*.png"))) == 10  # 4..9 forward, then 3..0 in reverse
    # the prompted frame 4 is counted (and written) once, though both passes yield it
    assert "tracked 1 object(s) over 10 frame(s); wrote 10 file(s)" in stdout


def test_prompt_file_and_max_frames(short_clip, tiny_checkpoint, tmp_path, capsys):
    mask = np.zeros((540, 960), np.uint8)
    mask[150:400, 300:500] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    prompts = [{"obj_id": 3, "frame": 0, "mask": "m.png"}, {"obj_id": 7, "points": [[700, 300, 1]]}]
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    code, _stdout, err = run_cli(track_args(short_clip, tiny_checkpoint, out, "--prompts", str(tmp_path / "p.json"),
                                           "--max-frames", "3", "--format", "png,rle,mp4"), capsys)
    assert code == 0, err
    assert len(list((out / "masks").glob("*.png"))) == 4  # the prompted frame and 3 more
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4  # the overlay shows the tracked frames only
    first = np.array(Image.open(out / "masks" / "00000.png"))
    assert (first == 3).sum() > 0.5 * (mask > 0).sum()  # the mask prompt is the output on its frame


def test_a_run_failing_mid_video_leaves_out_as_it_was(davis_dir, tiny_checkpoint, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        data = (davis_dir / "JPEGImages" / "480p" / "blackswan" / f"{i:05d}.jpg").read_bytes()
        # frame 3 is cut short: its header (read when the folder is opened) is intact, its pixels are not
        (frames / f"{i:05d}.jpg").write_bytes(data[: len(data) // 2] if i == 3 else data)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "00004.png").write_bytes(b"an earlier run's frame 4")
    (out / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli(track_args(frames, tiny_checkpoint, out, "--point", "400,200", "--format", "png,rle,mp4",
                                      "--overwrite"), capsys)
    assert code == 2 and "00003.jpg" in err and len(err.strip().splitlines()) == 1, err
    # frames 0..2 were staged before frame 3 failed to decode; the staging folder is removed
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.rglob("*")) == ["00004.png", "masks", "notes.txt"]


def _bad_mp4(tmp_path, short_clip):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(short_clip.read_bytes()[:2000])
    return path


ERROR_CASES = {
    "missing video": (lambda tmp, clip: tmp / "nope.mp4", ["--point", "10,10"], "nope.mp4: no such file"),
    "not a video": (lambda tmp, clip: (tmp / "notes.mp4").write_text("hello") and tmp / "notes.mp4",
                    ["--point", "10,10"], "notes.mp4"),
    "corrupt mp4": (_bad_mp4, ["--point", "10,10"], "corrupt.mp4"),
    "empty folder": (lambda tmp, clip: (tmp / "empty").mkdir() or tmp / "empty", ["--point", "10,10"], "empty"),
    "point outside the frame": (lambda tmp, clip: clip, ["--point", "2000,10"], "outside the 960x540 frame"),
    "frame out of range": (lambda tmp, clip: clip, ["--frame", "50", "--point", "10,10"], "out of range"),
    "no prompt": (lambda tmp, clip: clip, [], "no prompt given"),
    "bad point syntax": (lambda tmp, clip: clip, ["--point", "ten,10"], "numbers"),
    "unknown format": (lambda tmp, clip: clip, ["--point", "10,10", "--format", "gif"], "gif"),
    "image size not a multiple of 32": (lambda tmp, clip: clip, ["--point", "10,10", "--image-size", "100"],
                                        "image_size must be a positive multiple of 32"),
    "unknown device": (lambda tmp, clip: clip, ["--point", "10,10", "--device", "foo"], "unknown --device 'foo'"),
    "obj-id 0 with png output": (lambda tmp, clip: clip, ["--obj-id", "0", "--point", "10,10"], "object id 0"),
    "obj-id 300 with png output": (lambda tmp, clip: clip, ["--obj-id", "300", "--point", "10,10", "--format", "rle,mp4"],
                                   "object id 300"),
    "missing mask file": (lambda tmp, clip: clip, ["--mask", "no_such_mask.png"], "mask file not found"),
    "mask of the wrong size": (lambda tmp, clip: Image.new("L", (96, 54), 255).save(tmp / "small.png") or clip,
                               ["--mask", "small.png"], "96x54 but the video frames are 960x540"),
    "box outside the frame": (lambda tmp, clip: clip, ["--box", "900,500,1000,530"], "outside the 960x540 frame"),
}
if not torch.cuda.is_available():
    ERROR_CASES["cuda without CUDA"] = (lambda tmp, clip: clip, ["--point", "10,10", "--device", "cuda"],
                                        "CUDA is not available")


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, short_clip, tiny_checkpoint, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative --mask paths are looked up here
    make_video, extra, expected = ERROR_CASES[case]
    video = make_video(tmp_path, short_clip)
    out = tmp_path / "out"
    code, _, err = run_cli(track_args(video, tiny_checkpoint, out, *extra), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*"))


BAD_PROMPT_FILES = {
    "point of one number": ({"obj_id": 1, "points": [5]}, "entry 0: 'points' item 0 must be a list [x, y] or"),
    "points as a string": ({"obj_id": 1, "points": "10,10"}, "entry 0: 'points' must be a list"),
    "point label 2": ({"obj_id": 1, "points": [[10, 10, 2]]}, "'points' item 0: the label must be 1"),
    "mask as a number": ({"obj_id": 1, "mask": 5}, "entry 0: 'mask' must be the path of a PNG file, got 5"),
    "fractional frame": ({"obj_id": 1, "frame": 1.7, "points": [[10, 10]]}, "'frame' must be an integer, got 1.7"),
    "box as a string": ({"obj_id": 1, "box": "1,2,3,4"}, "entry 0: 'box' must be a list [x0, y0, x1, y1] of numbers"),
    "box of three numbers": ({"obj_id": 1, "box": [1, 2, 3]}, "'box' must be a list [x0, y0, x1, y1]"),
    "boolean obj_id": ({"obj_id": True, "points": [[10, 10]]}, "entry 0: 'obj_id' must be an integer, got True"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPT_FILES))
def test_malformed_prompt_file_names_the_field(case, short_clip, tiny_checkpoint, tmp_path, capsys):
    entry, expected = BAD_PROMPT_FILES[case]
    (tmp_path / "p.json").write_text(json.dumps([entry]))
    out = tmp_path / "out"
    code, _, err = run_cli(track_args(short_clip, tiny_checkpoint, out, "--prompts", str(tmp_path / "p.json")),
                           capsys)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "p.json" in lines[0], err
    assert not out.exists()


@pytest.mark.parametrize("extra,expected", [
    (["--point", "2000,10"], "outside the 960x540 frame"),
    (["--obj-id", "300", "--point", "10,10"], "object id 300"),
    (["--frame", "10", "--point", "10,10"], "out of range"),
    (["--mask", "no_such_mask.png"], "mask file not found"),
])
def test_prompts_are_checked_before_the_model_is_built(extra, expected, short_clip, tmp_path, capsys):
    unreadable = tmp_path / "sam2.1_hiera_tiny.pt"
    unreadable.write_bytes(b"not a checkpoint")  # building the model would fail on it
    code, _, err = run_cli(track_args(short_clip, unreadable, tmp_path / "out", *extra), capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_any_object_id_with_rle_output_alone(short_clip, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(track_args(short_clip, tiny_checkpoint, out, "--obj-id", "300", "--box", BOX,
                                      "--max-frames", "1", "--format", "rle"), capsys)
    assert code == 0, err
    records = json.loads((out / "masks.json").read_text())["annotations"]
    assert {r["obj_id"] for r in records} == {300} and {r["frame_index"] for r in records} == {0, 1}


@pytest.mark.parametrize("model,checkpoint,expected", [
    ("sam2.1_hiera_x", "ckpt", "unknown model name"),
    ("sam2.1_hiera_s", "ckpt", "not a sam2.1_hiera_s checkpoint"),
    ("sam2.1_hiera_t", None, "no --checkpoint given"),
    ("sam2.1_hiera_t", "missing", "checkpoint not found"),
])
def test_model_and_checkpoint_errors(model, checkpoint, expected, short_clip, tiny_checkpoint, tmp_path, capsys):
    args = ["track", str(short_clip), "--model", model, "--out", str(tmp_path / "out"), "--point", "10,10"]
    if checkpoint == "ckpt":
        args += ["--checkpoint", str(tiny_checkpoint)]
    elif checkpoint == "missing":
        args += ["--checkpoint", str(tmp_path / "none.pt")]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_models_command_lists_every_model(capsys):
    from effsam2.registry import list_models

    code, out, _ = run_cli(["models"], capsys)
    assert code == 0
    for name in list_models():
        assert name in out
