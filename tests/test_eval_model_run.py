"""`effsam2 eval --model`: first-frame ground truth as the prompt, propagate, score (tiny real DAVIS subset)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
from PIL import Image

from effsam2.build import build_model
from effsam2.cli import main
from effsam2.eval.metrics import region_similarity
from effsam2.eval.run_model import predict_sequence
from effsam2.io.datasets import DavisSequence
from effsam2.predictor.video import VideoPredictor
from tests.helpers.davis import copy_subset

SEQUENCES = ("blackswan", "dog")
FRAMES = 6


def test_eval_runs_the_model_and_scores_it(davis_dir, tiny_checkpoint, tmp_path, capsys):
    dataset = copy_subset(davis_dir, tmp_path / "davis", SEQUENCES, FRAMES)
    out = tmp_path / "out"
    code = main(["eval", "--dataset", str(dataset), "--model", "sam2.1_hiera_t", "--checkpoint",
                 str(tiny_checkpoint), "--image-size", "256", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    js = []
    for seq in SEQUENCES:
        pngs = sorted((out / "predictions" / seq).glob("*.png"))
        assert len(pngs) == FRAMES
        gt = [np.array(Image.open(dataset / "Annotations" / "480p" / seq / p.name)) > 0 for p in pngs]
        pred = [np.array(Image.open(p)) == 1 for p in pngs]
        # the prompted frame reproduces its ground truth (mask prompts are used as the output)
        assert region_similarity(pred[0], gt[0]) > 0.9
        js.append(np.mean([region_similarity(p, g) for p, g in zip(pred[1:-1], gt[1:-1])]))
    # the reported J is the protocol's mean (first and last frame dropped) over these sequences' objects
    assert results["num_objects"] == len(SEQUENCES)
    assert abs(results["global"]["J"] - np.mean(js)) < 1e-6


def test_eval_model_errors(davis_dir, tmp_path, capsys):
    code = main(["eval", "--dataset", str(davis_dir), "--model", "sam2.1_hiera_t", "--out", str(tmp_path)])
    assert code == 2 and "needs --checkpoint" in capsys.readouterr().err
    code = main(["eval", "--dataset", str(davis_dir), "--model", "sam2.1_hiera_t", "--checkpoint", "x.pt"])
    assert code == 2 and "needs --out" in capsys.readouterr().err


def test_eval_model_option_errors_are_one_line(davis_dir, tmp_path, capsys):
    checkpoint = tmp_path / "x.pt"
    checkpoint.write_bytes(b"not read: every error below comes before the model is built")
    cases = [(["--image-size", "100"], "image_size must be a positive multiple of 32"),
             (["--device", "foo"], "unknown --device 'foo'")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "CUDA is not available"))
    for extra, expected in cases:
        code = main(["eval", "--dataset", str(davis_dir), "--model", "sam2.1_hiera_t", "--checkpoint",
                     str(checkpoint), "--out", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and expected in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not (tmp_path / "out").exists()


class CountingSequence(DavisSequence):
    """A DAVIS sequence that counts how often each frame's ground truth is read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads: dict[str, int] = {}

    def gt_masks(self, frame):
        self.reads[frame] = self.reads.get(frame, 0) + 1
        return super().gt_masks(frame)


def test_first_frame_ground_truth_is_read_once_for_all_objects(davis_dir, tmp_path):
    images, annotations = tmp_path / "img", tmp_path / "ann"
    images.mkdir()
    annotations.mkdir()
    for i in range(2):
        name = f"{i:05d}"
        shutil.copy(davis_dir / "JPEGImages" / "480p" / "blackswan" / f"{name}.jpg", images / f"{name}.jpg")
        swan = np.array(Image.open(davis_dir / "Annotations" / "480p" / "blackswan" / f"{name}.png")) > 0
        labels = swan.astype(np.uint8)
        labels[:, labels.shape[1] // 2:] *= 2  # two objects: the swan's left and right halves
        Image.fromarray(labels).save(annotations / f"{name}.png")
    seq = CountingSequence("two", annotations, images)
    assert seq.object_ids == (1, 2)
    predictor = VideoPredictor(build_model("sam2.1_hiera_t", image_size=256))
    assert predict_sequence(predictor, seq, tmp_path / "out") == 2
    assert seq.reads == {"00000": 1}
