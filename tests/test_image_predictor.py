"""``effsam2.ImagePredictor`` against the official ``SAM2ImagePredictor`` (sam2==1.1.0), plus its errors.

Both predictors wrap models with the same non-degenerate random weights (tests/helpers/oracle.py) and
see the same real DAVIS frames. The official predictor needs torchvision for three transforms; the
stand-in in tests/helpers/torchvision_standin.py provides them from torchvision's documented behaviour
(and is itself checked against PIL's bilinear resampler below).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import effsam2
from effsam2 import Effsam2Error, ImagePredictor, PromptError
from effsam2.predictor.image import image_to_array
from tests.helpers.oracle import reference_and_ours
from tests.helpers.torchvision_standin import Resize, official_image_predictor_class

pytestmark = [
    pytest.mark.oracle,
    # the official transforms call torch.jit.script, deprecated in recent torch
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

IMAGE_SIZE = 512
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def frames(davis_dir):
    """Two real frames of different, non-square sizes: 854x480 and a 360x300 crop of another clip."""
    jpegs = davis_dir / "JPEGImages" / "480p"
    first = Image.open(jpegs / "blackswan" / "00000.jpg").convert("RGB")
    second = np.asarray(Image.open(jpegs / "cows" / "00000.jpg").convert("RGB"))[100:400, 300:660]
    return first, np.ascontiguousarray(second)


@pytest.fixture(scope="module")
def models():
    return reference_and_ours("sam2.1_hiera_t", IMAGE_SIZE)


def official_predictor(ref_model):
    predictor = official_image_predictor_class()(ref_model)
    # The official predictor hard-codes the backbone grids of a 1024 input; at IMAGE_SIZE they are S/4,
    # S/8 and S/16 (the attribute only reshapes the features, the computation is unchanged).
    side = IMAGE_SIZE // 4
    predictor._bb_feat_sizes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    return predictor


@pytest.fixture(scope="module")
def single(models, frames):
    """(official, ours) with the 854x480 frame set as a PIL image."""
    ref_model, our_model = models
    ref, ours = official_predictor(ref_model), ImagePredictor(our_model)
    ref.set_image(frames[0])
    ours.set_image(frames[0])
    return ref, ours


@pytest.fixture(scope="module")
def batch(models, frames):
    """(official, ours) with both frames set as numpy arrays through set_image_batch."""
    ref_model, our_model = models
    images = [np.asarray(frames[0]), frames[1]]
    ref, ours = official_predictor(ref_model), ImagePredictor(our_model)
    ref.set_image_batch(images)
    ours.set_image_batch(images)
    return ref, ours


def assert_logits_not_degenerate(logits: np.ndarray, what: str) -> None:
    """Every mask of (..., h, w) logits has both signs and is not nearly constant."""
    flat = logits.reshape(-1, *logits.shape[-2:])
    for i, m in enumerate(flat):
        assert np.isfinite(m).all(), f"{what}[{i}] has non-finite values"
        positive = float((m > 0).mean())
        assert 0.005 < positive < 0.995, f"{what}[{i}]: {positive:.1%} positive, trivially empty/full"
        assert m.std() > 0.05, f"{what}[{i}] is nearly constant"


def assert_same_prediction(ours, ref, return_logits: bool, ref_logits: np.ndarray | None = None) -> None:
    """Compare (masks, ious, low_res) tuples; binary masks may differ only where the logit is ~0."""
    (om, oi, ol), (rm, ri, rl) = ours, ref
    assert om.shape == rm.shape and oi.shape == ri.shape and ol.shape == rl.shape
    assert om.dtype == rm.dtype == np.float32
    np.testing.assert_allclose(ol, rl, atol=LOGIT_ATOL, rtol=0)
    np.testing.assert_allclose(oi, ri, atol=1e-5, rtol=0)
    if return_logits:
        np.testing.assert_allclose(om, rm, atol=LOGIT_ATOL, rtol=0)
    else:
        assert set(np.unique(rm)) <= {0.0, 1.0}
        decided = np.abs(ref_logits) > LOGIT_ATOL
        assert np.array_equal(om[decided], rm[decided])


def test_standin_resize_matches_pil_bilinear():
    """The stand-in's antialiased bilinear resize agrees with PIL's (float 'F' images), the resampler
    torchvision documents antialias=True as matching; down- and up-scaling, non-square."""
    rng = np.random.default_rng(0)
    img = rng.random((48, 85)).astype(np.float32)
    for h, w in [(32, 32), (64, 64), (48, 128), (20, 50)]:
        pil = np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.BILINEAR))
        ours = Resize((h, w))(torch.from_numpy(img)[None])[0].numpy()
        np.testing.assert_allclose(ours, pil, atol=1e-5)


def test_embedding_matches_official(single):
    ref, ours = single
    assert ours.is_image_set and ours.orig_hw == [(480, 854)]
    emb = ours.get_image_embedding()
    assert emb.shape == (1, 256, IMAGE_SIZE // 16, IMAGE_SIZE // 16)
    assert emb.std() > 0.05
    torch.testing.assert_close(emb, ref.get_image_embedding(), atol=1e-5, rtol=0)
    for o, r in zip(ours._embedding.high_res_feats, ref._features["high_res_feats"]):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


CASES = {
    "one click, multimask": {"point_coords": np.array([[430, 250]]), "point_labels": np.array([1])},
    "three clicks, single mask": {
        "point_coords": np.array([[430, 250], [300, 180], [520, 320]]), "point_labels": np.array([1, 0, 1]),
        "multimask_output": False},
    "box": {"box": np.array([300, 150, 620, 400])},
    "box and clicks, logits": {
        "box": np.array([300.0, 150.0, 620.0, 400.0]), "point_coords": [[450, 260], [350, 200]],
        "point_labels": [1, 0], "return_logits": True},
    "normalised click, logits": {
        "point_coords": np.array([[0.5, 0.52]], np.float32), "point_labels": [1], "normalize_coords": False,
        "return_logits": True},
    "two boxes with a click each": {
        "box": np.array([[300, 150, 620, 400], [50, 60, 250, 300]]),
        "point_coords": np.array([[[450, 260]], [[150, 200]]]), "point_labels": np.array([[1], [1]]),
        "multimask_output": False},
}


@pytest.mark.parametrize("case", list(CASES))
def test_predict_matches_official(single, case):
    ref, ours = single
    kwargs = CASES[case]
    expected = ref.predict(**kwargs)
    got = ours.predict(**kwargs)
    assert_logits_not_degenerate(expected[2], f"official low-res ({case})")
    return_logits = kwargs.get("return_logits", False)
    ref_logits = None if return_logits else ref.predict(**{**kwargs, "return_logits": True})[0]
    if ref_logits is not None:
        assert_logits_not_degenerate(ref_logits, f"official logits ({case})")
    assert_same_prediction(got, expected, return_logits, ref_logits)
    channels = 3 if kwargs.get("multimask_output", True) else 1
    rows = (2,) if case.startswith("two boxes") else ()
    assert got[0].shape == (*rows, channels, 480, 854)
    assert got[2].shape == (*rows, channels, IMAGE_SIZE // 4, IMAGE_SIZE // 4)


def test_binary_masks_are_thresholded_logits(single):
    _, ours = single
    kwargs = CASES["one click, multimask"]
    masks, _, _ = ours.predict(**kwargs)
    logits, _, _ = ours.predict(**kwargs, return_logits=True)
    assert np.array_equal(masks, (logits > 0).astype(np.float32))


def test_mask_input_from_previous_prediction_matches_official(single):
    ref, ours = single
    click = {"point_coords": np.array([[430, 250]]), "point_labels": np.array([1])}
    refine = {"point_coords": np.array([[430, 250], [330, 300]]), "point_labels": np.array([1, 0]),
              "multimask_output": False, "return_logits": True}
    outputs, mask_only = [], []
    for predictor in (ref, ours):
        _, ious, low_res = predictor.predict(**click)
        best = low_res[np.argmax(ious)][None]
        outputs.append(predictor.predict(**refine, mask_input=best))
        mask_only.append(predictor.predict(mask_input=best, return_logits=True))
    expected, got = outputs
    assert_logits_not_degenerate(expected[0], "official refined logits")
    assert_same_prediction(got, expected, return_logits=True)
    assert_logits_not_degenerate(mask_only[0][0], "official mask-only logits")
    assert_same_prediction(mask_only[1], mask_only[0], return_logits=True)
    # the mask prompt really changes the answer (so the comparison above exercised it)
    assert np.abs(ours.predict(**refine)[0] - got[0]).max() > 0.1


def test_predict_batch_matches_official(batch):
    ref, ours = batch
    assert ours.orig_hw == [(480, 854), (300, 360)]
    torch.testing.assert_close(ours.get_image_embedding(), ref.get_image_embedding(), atol=1e-5, rtol=0)
    kwargs = {"point_coords_batch": [np.array([[430, 250]]), np.array([[180, 150], [60, 60]])],
              "point_labels_batch": [np.array([1]), np.array([1, 0])],
              "box_batch": [None, np.array([80, 40, 300, 260])], "return_logits": True}
    expected = ref.predict_batch(**kwargs)
    got = ours.predict_batch(**kwargs)
    assert len(got[0]) == 2
    for i in range(2):
        assert_logits_not_degenerate(expected[0][i], f"official image {i}")
        assert_same_prediction(tuple(g[i] for g in got), tuple(e[i] for e in expected), return_logits=True)
    assert got[0][1].shape == (3, 300, 360)


def test_exported_from_package():
    assert effsam2.ImagePredictor is ImagePredictor
    assert "ImagePredictor" in effsam2.__all__


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_state_errors(models, single, batch):
    fresh = ImagePredictor(models[1])
    assert not fresh.is_image_set
    with pytest.raises(Effsam2Error) as e:
        fresh.predict(point_coords=[[1, 1]], point_labels=[1])
    assert "set_image" in _one_line_error(e)
    with pytest.raises(Effsam2Error):
        fresh.get_image_embedding()
    with pytest.raises(Effsam2Error) as e:
        single[1].predict_batch(point_coords_batch=[[[1, 1]]], point_labels_batch=[[1]])
    assert "set_image_batch" in _one_line_error(e)
    with pytest.raises(Effsam2Error) as e:
        batch[1].predict(point_coords=[[1, 1]], point_labels=[1])
    assert "predict_batch" in _one_line_error(e)
    with pytest.raises(PromptError) as e:
        batch[1].predict_batch(point_coords_batch=[[[1, 1]]], point_labels_batch=[[1]])
    assert "2 images" in _one_line_error(e)
    with pytest.raises(Effsam2Error) as e:
        ImagePredictor(models[1], max_hole_area=8)
    _one_line_error(e)


@pytest.mark.parametrize("image", [np.zeros((32, 32, 3), np.float32), np.zeros((32, 32), np.uint8),
                                   np.zeros((32, 32, 4), np.uint8), np.zeros((0, 32, 3), np.uint8), "img.jpg"])
def test_bad_image_is_rejected(models, image):
    with pytest.raises(Effsam2Error) as e:
        ImagePredictor(models[1]).set_image(image)
    _one_line_error(e)
    with pytest.raises(Effsam2Error):
        ImagePredictor(models[1]).set_image_batch([image])


def test_pil_images_of_other_modes_become_rgb():
    gray = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), mode="L")
    rgb = image_to_array(gray)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 1], np.arange(12).reshape(3, 4))


def test_16_bit_pil_images_are_scaled_not_saturated():
    ramp = np.linspace(0, 65535, 6 * 40).round().astype(np.uint16).reshape(6, 40)
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    expected = np.rint(ramp.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)  # full range -> 0..255
    rgb = image_to_array(image)
    assert rgb.shape == (6, 40, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], expected)
    assert len(np.unique(rgb)) > 200  # a ramp, not saturated at 255


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_empty_pil_image_is_rejected(mode):
    with pytest.raises(Effsam2Error, match="empty"):
        image_to_array(Image.new(mode, (0, 0)))


BAD_PROMPTS = {
    "click outside the image": ({"point_coords": [[900, 10]], "point_labels": [1]}, "outside"),
    "negative coordinate": ({"point_coords": [[-1, 10]], "point_labels": [1]}, "outside"),
    "normalised click above 1": ({"point_coords": [[0.5, 1.5]], "point_labels": [1], "normalize_coords": False},
                                 "outside"),
    "label 2": ({"point_coords": [[10, 10]], "point_labels": [2]}, "labels"),
    "two points one label": ({"point_coords": [[10, 10], [20, 20]], "point_labels": [1]}, "labels"),
    "points without labels": ({"point_coords": [[10, 10]]}, "together"),
    "labels without points": ({"point_labels": [1]}, "together"),
    "box of three numbers": ({"box": [1, 2, 3]}, "box"),
    "empty box": ({"box": [50, 50, 40, 60]}, "box"),
    "box outside": ({"box": [10, 10, 900, 60]}, "outside"),
    "two boxes, one click row": (
        {"box": [[1, 1, 5, 5], [2, 2, 6, 6]], "point_coords": [[3, 3]], "point_labels": [1]}, "boxes"),
    "mask_input of the wrong size": ({"mask_input": np.zeros((1, 256, 256), np.float32)}, "mask_input"),
    "three masks as mask_input": ({"mask_input": np.zeros((3, 128, 128), np.float32)}, "mask_input"),
    "non-numeric click": ({"point_coords": [["a", "b"]], "point_labels": [1]}, "numeric"),
    "NaN click": ({"point_coords": [[np.nan, 3]], "point_labels": [1]}, "NaN"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_bad_prompt_is_rejected(single, case):
    kwargs, word = BAD_PROMPTS[case]
    with pytest.raises(PromptError) as e:
        single[1].predict(**kwargs)
    assert word in _one_line_error(e)


def test_reset_predictor(models, frames):
    predictor = ImagePredictor(models[1])
    predictor.set_image(frames[1][:64, :64])  # small crop: the encoder still runs at IMAGE_SIZE
    assert predictor.is_image_set and predictor.orig_hw == [(64, 64)]
    predictor.reset_predictor()
    assert not predictor.is_image_set and predictor.orig_hw == []
    with pytest.raises(Effsam2Error):
        predictor.predict(point_coords=[[1, 1]], point_labels=[1])
