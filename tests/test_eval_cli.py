"""``effsam2 eval`` end to end on real DAVIS-2016 sequences with perturbed ground truth."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from effsam2.cli import main
from effsam2.eval.metrics import boundary_f_measure, region_similarity
from effsam2.io.masks import save_label_png as write_label_png

SEQS = ("car-shadow", "motocross-jump", "blackswan")


def _erode(m: np.ndarray, k: int) -> np.ndarray:
    h, w = m.shape
    padded = np.pad(m, k)
    out = np.ones_like(m)
    for dy in range(2 * k + 1):
        for dx in range(2 * k + 1):
            out &= padded[dy : dy + h, dx : dx + w]
    return out


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = m.shape
    padded = np.pad(m, ((abs(dy), abs(dy)), (abs(dx), abs(dx))))
    return padded[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


@pytest.fixture(scope="module")
def predictions(davis_dir, tmp_path_factory):
    """Predictions in three PNG flavours, and the masks they hold (for the independent check)."""
    root = tmp_path_factory.mktemp("pred")
    held: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for seq in SEQS:
        (root / seq).mkdir()
        held[seq] = {}
        for path in sorted((davis_dir / "Annotations" / "480p" / seq).glob("*.png")):
            gt = np.array(Image.open(path)) > 0
            if seq == "car-shadow":  # eroded, binary 0/255 grey PNG
                pred = _erode(gt, 2)
                Image.fromarray((pred * 255).astype(np.uint8)).save(root / seq / path.name)
            elif seq == "motocross-jump":  # shifted, DAVIS palette PNG
                pred = _shift(gt, 5, -7)
                write_label_png(root / seq / path.name, pred.astype(np.uint8))
            else:  # exact except one empty frame, 0/1 grey PNG
                pred = np.zeros_like(gt) if path.stem == "00020" else gt
                Image.fromarray(pred.astype(np.uint8)).save(root / seq / path.name)
            held[seq][path.stem] = (pred, gt)
    return root, held


def _expected(held):
    """Independent protocol: drop first/last frame, mean per object (one per sequence), mean of all."""
    per_seq = {}
    for seq, frames in held.items():
        names = sorted(frames)[1:-1]
        j = [region_similarity(*frames[n]) for n in names]
        f = [boundary_f_measure(*frames[n]) for n in names]
        per_seq[seq] = (float(np.mean(j)), float(np.mean(f)))
    j = float(np.mean([v[0] for v in per_seq.values()]))
    f = float(np.mean([v[1] for v in per_seq.values()]))
    return per_seq, j, f


def test_eval_cli_end_to_end(davis_dir, predictions, tmp_path, capsys):
    pred_root, held = predictions
    out, summary_path = tmp_path / "out", tmp_path / "summary.json"
    rc = main(
        [
            "eval",
            "--dataset", str(davis_dir),
            "--split", "val",
            "--sequences", ",".join(SEQS),
            "--predictions", str(pred_root),
            "--out", str(out),
            "--json", str(summary_path),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.json", "results.md"]
    per_seq, j, f = _expected(held)

    summary = json.loads(summary_path.read_text())
    assert summary["num_sequences"] == 3 and summary["num_objects"] == 3
    assert summary["num_scored"] == 38 + 38 + 48
    assert summary["global"]["J"] == pytest.approx(j, abs=1e-12)
    assert summary["global"]["F"] == pytest.approx(f, abs=1e-12)
    assert summary["global"]["J&F"] == pytest.approx((j + f) / 2, abs=1e-12)
    assert summary["sequence_mean"]["J&F"] == pytest.approx((j + f) / 2, abs=1e-12)  # one object each
    assert 0.3 < summary["global"]["J"] < 0.99  # the perturbations really cost something

    full = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in full["sequences"]] == list(SEQS)
    blackswan = full["sequences"][2]["objects"][0]["per_frame"]
    k = blackswan["frames"].index("00020")
    assert blackswan["J"][k] == 0.0 and blackswan["F"][k] == 0.0
    assert sum(v == 1.0 for v in blackswan["J"]) == 47  # every other scored frame is exact

    rows = {r["sequence"]: r for r in csv.DictReader((out / "results.csv").open())}
    for seq, (sj, sf) in per_seq.items():
        assert float(rows[seq]["J"]) == pytest.approx(sj, abs=1e-12)
        assert float(rows[seq]["F"]) == pytest.approx(sf, abs=1e-12)
        assert f"| {seq} | 1 | {100 * (sj + sf) / 2:.1f} |" in captured.out
    assert (out / "results.md").read_text() == captured.out


def test_eval_cli_bad_dataset(tmp_path, capsys):
    rc = main(["eval", "--dataset", str(tmp_path / "nope"), "--predictions", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "nope" in err and err.startswith("effsam2 eval: error:")


def test_eval_cli_missing_prediction(davis_dir, predictions, tmp_path, capsys):
    pred_root, _ = predictions
    partial = tmp_path / "partial" / "car-shadow"
    partial.mkdir(parents=True)
    for p in sorted((pred_root / "car-shadow").glob("*.png"))[:10]:
        partial.joinpath(p.name).write_bytes(p.read_bytes())
    rc = main(
        [
            "eval",
            "--dataset",
            str(davis_dir),
            "--sequences",
            "car-shadow",
            "--predictions",
            str(partial.parent),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "car-shadow/00010.png" in err
