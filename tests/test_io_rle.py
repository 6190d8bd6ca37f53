"""COCO RLE encoding and the masks.json writer/reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from effsam2.errors import DatasetError, PromptError
from effsam2.io import RleJsonWriter, decode_rle, encode_rle, read_rle_json

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools + numpy 2
)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=20)))
def test_rle_round_trip(mask):
    rle = encode_rle(mask)
    assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
    json.dumps(rle)  # JSON-ready as is
    np.testing.assert_array_equal(decode_rle(rle), mask)


def test_rle_on_real_mask_and_formats(davis_dir):
    from PIL import Image

    mask = np.array(Image.open(davis_dir / "Annotations" / "480p" / "blackswan" / "00000.png")) > 0
    rle = encode_rle(mask)
    assert len(rle["counts"]) < mask.size // 50  # compact: a few hundred bytes for a 480p mask
    np.testing.assert_array_equal(decode_rle(rle), mask)
    np.testing.assert_array_equal(decode_rle({**rle, "counts": rle["counts"].encode()}), mask)
    # pycocotools reads our dicts directly (after bytes conversion, as COCO tools do)
    coco = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(coco.astype(bool), mask)


def test_uncompressed_counts():
    m = np.zeros((3, 2), bool)
    m[1:, 0] = True  # column-major runs: 1 zero, 2 ones, 3 zeros
    np.testing.assert_array_equal(decode_rle({"size": [3, 2], "counts": [1, 2, 3]}), m)


def _mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_writer_out_of_order_and_replacements(tmp_path):
    path = tmp_path / "masks.json"
    names = [f"f{i}" for i in range(6)]
    with RleJsonWriter(path, height=8, width=10, frame_names=names, fps=25.0) as w:
        w.add(4, 2, _mask(8, 10, 1, 3, 2, 7))
        w.add(4, 1, _mask(8, 10, 0, 8, 0, 1))
        w.add(0, 1, np.zeros((8, 10), bool))
        w.add(2, 300, _mask(8, 10, 5, 6, 5, 6))  # RLE ids are not limited to 255
        w.add(4, 2, _mask(8, 10, 2, 4, 3, 5))  # replaces the first record for (4, 2)
        assert len(w) == 4
        assert not path.exists()  # written at close only
    doc = json.loads(path.read_text())
    assert doc["format"] == "effsam2-rle" and doc["num_frames"] == 6 and doc["fps"] == 25.0
    anns = doc["annotations"]
    assert [(a["frame_index"], a["obj_id"]) for a in anns] == [(0, 1), (2, 300), (4, 1), (4, 2)]
    by_key = {(a["frame_index"], a["obj_id"]): a for a in anns}
    assert by_key[(4, 2)]["area"] == 4 and by_key[(4, 2)]["bbox"] == [3.0, 2.0, 2.0, 2.0]
    assert by_key[(0, 1)]["area"] == 0 and by_key[(0, 1)]["bbox"] == [0.0, 0.0, 0.0, 0.0]
    assert by_key[(4, 1)]["frame_name"] == "f4"

    doc = read_rle_json(path)
    assert (doc.height, doc.width, doc.num_frames) == (8, 10, 6)
    assert doc.frame_indices() == [0, 2, 4]
    masks = doc.frame_masks(4)
    np.testing.assert_array_equal(masks[2], _mask(8, 10, 2, 4, 3, 5))
    np.testing.assert_array_equal(masks[1], _mask(8, 10, 0, 8, 0, 1))
    assert doc.frame_masks(1) == {}


def test_writer_validation_and_abort(tmp_path):
    path = tmp_path / "masks.json"
    w = RleJsonWriter(path, height=4, width=4, num_frames=3)
    with pytest.raises(ValueError, match="shape"):
        w.add(0, 1, np.zeros((4, 5), bool))
    with pytest.raises(IndexError):
        w.add(3, 1, np.zeros((4, 4), bool))
    with pytest.raises(PromptError):
        w.add(0, -1, np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="does not match"):
        w.add_rle(0, 1, encode_rle(np.zeros((5, 4), bool)))
    with pytest.raises(RuntimeError), w:
        w.add(0, 1, np.ones((4, 4), bool))
        raise RuntimeError("propagation failed")
    assert not path.exists()  # an aborted writer writes nothing
    with pytest.raises(ValueError, match="closed"):
        w.add(0, 1, np.ones((4, 4), bool))


def test_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="missing.json"):
        read_rle_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_rle_json(bad)
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DatasetError, match="not an effsam2-rle file"):
        read_rle_json(bad)
    bad.write_text(json.dumps({"format": "effsam2-rle", "height": 2, "width": 2, "annotations": [{"x": 1}]}))
    with pytest.raises(DatasetError, match="malformed"):
        read_rle_json(bad)
