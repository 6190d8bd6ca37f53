"""Mirror test-time augmentation (``predictor.mirror``, ``--tta mirror``) with the shipped default model on
real DAVIS-2016 val frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import effsam2
from effsam2.cli import main
from effsam2.errors import Effsam2Error
from effsam2.eval.metrics import region_similarity
from effsam2.io.frames import open_frames
from effsam2.predictor.mirror import (
    MirrorAveragingPredictor,
    MirroredFrames,
    mirror_box,
    mirror_points,
    with_tta,
)
from tests.helpers.davis import copy_subset

FRAMES = 5


@pytest.fixture(scope="module")
def model():
    return effsam2.build_model()


@pytest.fixture(scope="module")
def dog(davis_dir):
    frames_dir = davis_dir / "JPEGImages" / "480p" / "dog"
    masks_dir = davis_dir / "Annotations" / "480p" / "dog"
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(frames_dir.glob("*.jpg"))[:FRAMES]]
    gts = [np.asarray(Image.open(p)) > 0 for p in sorted(masks_dir.glob("*.png"))[:FRAMES]]
    return frames, gts


def _track(predictor, frames, prompt):
    state = predictor.init_state(frames)
    prompt(predictor, state)
    return torch.stack([logits for _, _, logits in predictor.propagate_in_video(state)])


def _flip(array):
    return np.ascontiguousarray(array[:, ::-1])


def test_mirrored_frames_are_the_frames_flipped(dog):
    frames, _ = dog
    source = open_frames(frames)
    mirrored = MirroredFrames(source)
    assert len(mirrored) == FRAMES and (mirrored.height, mirrored.width) == (source.height, source.width)
    assert mirrored.frame_names == source.frame_names
    assert np.array_equal(mirrored.get(2), frames[2][:, ::-1])
    assert not np.array_equal(mirrored.get(2), frames[2])  # a real frame is not symmetric


def test_mirror_averaging_is_the_mean_of_two_plain_trackings(model, dog):
    """The reference: two plain VideoPredictor runs, on the frames and on the frames flipped by numpy."""
    frames, gts = dog
    plain = effsam2.VideoPredictor(model)
    original = _track(plain, frames, lambda p, s: p.add_new_mask(s, 0, 1, gts[0]))
    mirrored = _track(plain, [_flip(f) for f in frames], lambda p, s: p.add_new_mask(s, 0, 1, _flip(gts[0])))
    # not degenerate: both track the dog, and the two views disagree somewhere (else averaging did nothing)
    for logits in (original, mirrored):
        area = (logits > 0).float().mean().item()
        assert 0.01 < area < 0.5
    assert not torch.equal(original, mirrored.flip(-1))
    averaged = _track(MirrorAveragingPredictor(plain), frames, lambda p, s: p.add_new_mask(s, 0, 1, gts[0]))
    assert averaged.shape == original.shape
    torch.testing.assert_close(averaged, (original + mirrored.flip(-1)) / 2, rtol=0, atol=1e-5)
    j = [float(region_similarity((averaged[t, 0, 0] > 0).numpy(), gts[t])) for t in range(1, FRAMES)]
    assert np.mean(j) >= 0.7, j


def test_mirror_averaging_commutes_with_mirroring_the_video(model, dog):
    """Mirroring the input mirrors the output: the two sessions swap roles (clicks and a box reflected)."""
    frames, gts = dog
    ys, xs = np.nonzero(gts[0])
    click, box = [[int(np.median(xs)), int(np.median(ys))]], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    width = frames[0].shape[1]
    predictor = MirrorAveragingPredictor(effsam2.VideoPredictor(model))

    def prompt(points, b):
        return lambda p, s: p.add_new_points_or_box(s, 0, 1, points=points, labels=[1], box=b)

    direct = _track(predictor, frames[:3], prompt(click, box))
    flipped = _track(predictor, [_flip(f) for f in frames[:3]],
                     prompt(mirror_points(click, width), mirror_box(box, width)))
    assert 0.01 < (direct > 0).float().mean().item() < 0.5
    torch.testing.assert_close(flipped.flip(-1), direct, rtol=0, atol=1e-5)


def test_mirror_points_and_box_reflect_about_the_frame_centre():
    assert mirror_points([[10, 5], [600, 7]], 640).tolist() == [[630, 5], [40, 7]]
    assert mirror_box([10, 5, 100, 50], 640).tolist() == [540, 5, 630, 50]


def test_unknown_tta_is_a_one_line_error(model):
    plain = effsam2.VideoPredictor(model)
    assert with_tta(plain, "none") is plain
    assert isinstance(with_tta(plain, "mirror"), MirrorAveragingPredictor)
    with pytest.raises(Effsam2Error, match="unknown test-time augmentation 'rotate'"):
        with_tta(plain, "rotate")


def test_eval_with_mirror_tta(davis_dir, tmp_path, capsys):
    dataset = copy_subset(davis_dir, tmp_path / "davis", ("dog",), FRAMES)
    out = tmp_path / "eval"
    code = main(["eval", "--dataset", str(dataset), "--model", "default", "--tta", "mirror", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "test-time augmentation: mirror" in captured.err
    pngs = sorted((out / "predictions" / "dog").glob("*.png"))
    assert len(pngs) == FRAMES
    gts = [np.asarray(Image.open(dataset / "Annotations" / "480p" / "dog" / p.name)) > 0 for p in pngs]
    j = [region_similarity(np.asarray(Image.open(p)) == 1, g) for p, g in zip(pngs[1:], gts[1:])]
    assert np.mean(j) >= 0.7, j
    assert json.loads((out / "results.json").read_text())["num_objects"] == 1


def test_track_with_mirror_tta(davis_dir, tmp_path, capsys):
    frames = davis_dir / "JPEGImages" / "480p" / "dog"
    gt = davis_dir / "Annotations" / "480p" / "dog" / "00000.png"
    out = tmp_path / "track"
    code = main(["track", str(frames), "--mask", str(gt), "--tta", "mirror", "--max-frames", "2",
                 "--format", "png", "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    masks = [np.asarray(Image.open(p)) == 1 for p in sorted((out / "masks").glob("*.png"))]
    assert len(masks) == 3 and all(0.01 < m.mean() < 0.5 for m in masks)
    with pytest.raises(SystemExit):  # argparse: a usage line and the error
        main(["track", str(frames), "--mask", str(gt), "--tta", "flip", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'flip'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
