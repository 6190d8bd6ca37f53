"""Scoring protocol, prediction layouts, aggregation and report writers (tiny synthetic datasets)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_io_datasets import make_davis17, make_sav

from effsam2.errors import DatasetError
from effsam2.eval.metrics import boundary_f_measure, region_similarity
from effsam2.eval.report import format_csv, format_markdown, write_json, write_results
from effsam2.eval.scoring import PredictionFolder, score_dataset, score_sequence
from effsam2.io.datasets import open_dataset
from effsam2.io.masks import save_label_png as write_label_png


def copy_gt_as_predictions(ds, pred_root):
    for name in ds.all_sequences():
        seq = ds.sequence(name)
        (pred_root / name).mkdir(parents=True)
        for frame in seq.frames:
            write_label_png(pred_root / name / f"{frame}.png", seq.label_map(frame))


def test_perfect_predictions_score_one(tmp_path):
    ds = open_dataset(make_davis17(tmp_path / "ds"))
    copy_gt_as_predictions(ds, tmp_path / "pred")
    res = score_dataset(ds, tmp_path / "pred", split="val")
    assert [s.name for s in res.sequences] == ["two", "one"]
    assert res.jf_mean == res.j_mean == res.f_mean == 1.0
    assert len(res.objects) == 3
    for _, obj in res.objects:
        assert obj.frames == ("00001", "00002", "00003")  # 5 frames, first and last dropped
        assert obj.j_recall == 1.0 and obj.j_decay == 0.0
    assert res.notes == ()


def test_protocol_frames_and_aggregation(tmp_path):
    """Object 2 of 'two' predicted empty on frame 2 only; 'one' is perfect.

    Object 2: J = F = (1 + 0 + 1) / 3. Sequence 'two' = mean of objects (1 and 2/3) = 5/6;
    'one' = 1. Global = mean over the 3 objects = (1 + 2/3 + 1) / 3 = 8/9; mean over sequences =
    (5/6 + 1) / 2 = 11/12. The first and last frames are wrong but must not count.
    """
    ds = open_dataset(make_davis17(tmp_path / "ds"))
    copy_gt_as_predictions(ds, tmp_path / "pred")
    two = tmp_path / "pred" / "two"
    seq = ds.sequence("two")
    for frame in ("00000", "00004"):  # skipped frames: garbage there must not matter
        write_label_png(two / f"{frame}.png", np.zeros((12, 16), np.uint8))
    lm = seq.label_map("00002")
    lm[lm == 2] = 0
    write_label_png(two / "00002.png", lm)
    res = score_dataset(ds, tmp_path / "pred", split="val")
    obj2 = res.sequences[0].objects[1]
    assert obj2.object_id == 2
    assert obj2.j.tolist() == [1.0, 0.0, 1.0] and obj2.f.tolist() == [1.0, 0.0, 1.0]
    assert res.sequences[0].jf_mean == pytest.approx(5 / 6)
    assert res.jf_mean == pytest.approx(8 / 9)
    assert res.sequence_mean["J&F"] == pytest.approx(11 / 12)
    summary = res.summary()
    assert summary["global"]["J"] == pytest.approx(8 / 9)
    assert summary["sequence_mean"]["F"] == pytest.approx(11 / 12)
    assert summary["num_objects"] == 3 and summary["num_scored"] == 9
    # without the protocol's skip, the empty first/last frames of 'two' now count
    res_all = score_dataset(ds, tmp_path / "pred", sequences=["two"], skip_first_last=False)
    assert len(res_all.sequences[0].objects[0].frames) == 5
    assert res_all.jf_mean < res.sequences[0].jf_mean


def test_binary_predictions_extra_ids_and_missing_objects(tmp_path):
    ds = open_dataset(make_davis17(tmp_path / "ds"))
    pred = tmp_path / "pred"
    seq = ds.sequence("two")
    (pred / "two").mkdir(parents=True)
    for frame in seq.frames:
        lm = seq.label_map(frame)
        out = np.where(lm == 1, 255, 0).astype(np.uint8)  # binary L PNG: reads as object 1 only
        Image.frombytes("L", (16, 12), out.tobytes()).save(pred / "two" / f"{frame}.png")
    res = score_dataset(ds, pred, sequences=["two"])
    obj1, obj2 = res.sequences[0].objects
    assert obj1.j_mean == 1.0 and obj2.j_mean == 0.0 and obj2.f_mean == 0.0  # absent = empty
    # an id that is no ground-truth object is ignored and reported
    lm = seq.label_map("00002")
    lm[0, 0] = 9
    write_label_png(pred / "two" / "00002.png", lm)
    res = score_dataset(ds, pred, sequences=["two"])
    assert any("[9]" in note and "00002" in note for note in res.notes)


def test_prediction_errors(tmp_path):
    ds = open_dataset(make_davis17(tmp_path / "ds"))
    pred = tmp_path / "pred"
    copy_gt_as_predictions(ds, pred)
    (pred / "one" / "00003.png").unlink()
    with pytest.raises(DatasetError, match=r"missing prediction.*one/00003\.png"):
        score_dataset(ds, pred, sequences=["one"])
    (pred / "one" / "00000.png").unlink()  # first frame is not scored: no prediction needed
    write_label_png(pred / "one" / "00003.png", np.zeros((12, 16), np.uint8))
    score_dataset(ds, pred, sequences=["one"])
    write_label_png(pred / "one" / "00002.png", np.zeros((10, 16), np.uint8))
    with pytest.raises(DatasetError, match=r"one/00002.*size"):
        score_dataset(ds, pred, sequences=["one"])
    shutil.rmtree(pred / "two")
    with pytest.raises(DatasetError, match="no predictions for sequence two"):
        score_dataset(ds, pred, sequences=["two"])
    with pytest.raises(DatasetError, match="predictions folder not found"):
        PredictionFolder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown sequence"):
        score_dataset(ds, pred, sequences=["nope"])


def test_sav_layout_scoring(tmp_path):
    """SA-V: per-object folders, each object scored on its own annotated frames minus first/last.

    Object 000 (frames 0,4,8,12) is scored on 4 and 8; object 001 (frames 4,8,12) only on 8.
    Prediction: 000 perfect; 001 shifted right by 2 px on frame 8 (J = 2/6), plus unannotated
    frames that must be ignored.
    """
    ds = open_dataset(make_sav(tmp_path / "ds"))
    seq = ds.sequence("sav_000001")
    pred = tmp_path / "pred" / "sav_000001"
    for oid, name in ((0, "000"), (1, "001")):
        (pred / name).mkdir(parents=True)
        for frame in seq.annotated_frames(oid):
            m = seq.gt_masks(frame)[oid]
            if oid == 1 and frame == "00008":
                m = np.roll(m, 2, axis=1)
            write_label_png(pred / name / f"{frame}.png", m.astype(np.uint8))
    res = score_dataset(ds, tmp_path / "pred")
    obj0, obj1 = res.sequences[0].objects
    assert obj0.frames == ("00004", "00008") and obj0.jf_mean == 1.0
    assert obj1.frames == ("00008",)
    gt = seq.gt_masks("00008")[1]
    assert obj1.j_mean == pytest.approx(2 / 6)
    assert obj1.f_mean == boundary_f_measure(np.roll(gt, 2, axis=1), gt)
    assert res.j_mean == pytest.approx((1 + 2 / 6) / 2)
    # unscored frames need no prediction (001's first frame 00004 is scored for 000 only)
    for frame in ("00004", "00012"):
        (pred / "001" / f"{frame}.png").unlink()
    assert score_dataset(ds, tmp_path / "pred").j_mean == res.j_mean
    # a missing object folder is scored as empty, with a note
    shutil.rmtree(pred / "001")
    res = score_dataset(ds, tmp_path / "pred")
    assert res.sequences[0].objects[1].j_mean == 0.0
    assert any("object 001" in n for n in res.notes)


def test_sav_label_map_predictions_rejected(tmp_path):
    """SA-V object 000 is id 0, which a label map cannot hold: a clear error, not silent zeros."""
    ds = open_dataset(make_sav(tmp_path / "ds"))
    pred = tmp_path / "pred" / "sav_000001"
    pred.mkdir(parents=True)
    for t in range(13):
        write_label_png(pred / f"{t:05d}.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DatasetError, match="object id 0"):
        score_dataset(ds, tmp_path / "pred")


def test_callback_predictions(tmp_path):
    """Model-driven mode: a per-sequence callable serving {object id: mask} or label maps."""
    ds = open_dataset(make_davis17(tmp_path / "ds"))

    def per_sequence(seq):
        def source(frame, object_ids):
            assert object_ids == seq.object_ids  # DAVIS: every object is scored on every frame
            return {oid: m for oid, m in seq.gt_masks(frame).items() if oid != 2}

        return source

    res = score_dataset(ds, per_sequence, sequences=["two", "one"])
    assert res.predictions is None
    assert [o.j_mean for _, o in res.objects] == [1.0, 0.0, 1.0]
    seq = ds.sequence("one")
    score, notes = score_sequence(seq, lambda frame, _: seq.label_map(frame))
    assert score.jf_mean == 1.0 and notes == []


def test_report_writers(tmp_path):
    ds = open_dataset(make_davis17(tmp_path / "ds"))
    copy_gt_as_predictions(ds, tmp_path / "pred")
    lm = ds.sequence("one").label_map("00002")
    write_label_png(tmp_path / "pred" / "one" / "00002.png", np.roll(lm, 1, axis=1))
    res = score_dataset(ds, tmp_path / "pred", split="val")
    out = tmp_path / "out"
    paths = write_results(res, out)
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.json", "results.md"]
    data = json.loads(paths["json"].read_text())
    assert data["global"]["J&F"] == pytest.approx(res.jf_mean)
    one = data["sequences"][1]
    assert one["name"] == "one" and one["objects"][0]["per_frame"]["frames"] == ["00001", "00002", "00003"]
    j_frame2 = region_similarity(np.roll(lm, 1, axis=1) == 1, lm == 1)
    assert one["objects"][0]["per_frame"]["J"] == [1.0, pytest.approx(j_frame2), 1.0]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["sequence"], r["object"]) for r in rows] == [("two", "1"), ("two", "2"), ("one", "1")]
    assert float(rows[2]["J"]) == pytest.approx((2 + j_frame2) / 3)
    md = paths["md"].read_text()
    assert md == format_markdown(res) and "| one | 1 |" in md and "global (mean of 3 objects)" in md
    assert format_csv(res) == paths["csv"].read_text()
    write_json({"x": float("nan")}, out / "nan.json")
    assert json.loads((out / "nan.json").read_text()) == {"x": None}
