"""First-frame adaptation (``effsam2.train.adapt``, ``effsam2 eval --adapt-steps``) on a real DAVIS frame."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import effsam2
from effsam2.cli import main
from effsam2.cli.adapt_args import add_adapt_options
from effsam2.errors import Effsam2Error
from effsam2.eval.metrics import region_similarity
from effsam2.train.adapt import ADAPT_CLIPS, ADAPT_PROMPTS, AdaptSettings, adapt_to_prompt, prompt_video
from effsam2.train.clip_sampler import sample_clip
from effsam2.train.vos_step import clip_loss, normalise
from tests.helpers.davis import copy_subset, first_frames

SIZE = 128  # small input: a step takes a fraction of a second on CPU
SEQUENCE = "blackswan"


@pytest.fixture(scope="module")
def model():
    return effsam2.build_model(image_size=SIZE)


@pytest.fixture(scope="module")
def prompt(davis_dir):
    (image,), mask = first_frames(davis_dir, SEQUENCE, 1)
    return prompt_video(SEQUENCE, image, mask, SIZE)


def _fixed_loss(model, video) -> float:
    """The adaptation loss on clips drawn from a generator no adaptation step uses."""
    rng = np.random.default_rng(12345)
    clips = [sample_clip(rng, [video], ADAPT_CLIPS) for _ in range(2)]
    frames = torch.stack([c[0] for c in clips], 1)
    masks = torch.stack([c[1] for c in clips], 1)
    with torch.no_grad():
        return float(clip_loss(model.eval(), rng, normalise(frames), masks, ADAPT_PROMPTS).total)


def test_prompt_video_is_the_frame_and_mask_at_model_size(prompt):
    assert prompt.frames.shape == (1, SIZE, SIZE, 3) and prompt.frames.dtype == np.uint8
    assert prompt.masks.shape == (1, 1, SIZE, SIZE)
    assert 0 < prompt.masks.sum() < prompt.masks.size


def test_zero_steps_is_the_model_itself(model, prompt):
    adapted = adapt_to_prompt(model, [prompt], AdaptSettings(steps=0))
    assert adapted.model is model and adapted.losses == []


def test_adaptation_lowers_the_loss_and_leaves_the_model_alone(model, prompt):
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = _fixed_loss(model, prompt)
    settings = AdaptSettings(steps=6, lr=1e-3, batch_size=1, clip_frames=3, dtype="fp32")  # trunk frozen
    adapted = adapt_to_prompt(model, [prompt], settings)
    assert adapted.model is not model and len(adapted.losses) == 6
    assert np.isfinite(adapted.losses).all()
    after = _fixed_loss(adapted.model, prompt)
    assert after < before, (before, after)
    # the model handed in is untouched; the copy keeps the trunk and changes the trained parts
    for key, value in model.state_dict().items():
        assert torch.equal(value, before_state[key]), key
    new_state = adapted.model.state_dict()
    trunk = [k for k in new_state if k.startswith("image_encoder.trunk.")]
    assert trunk and all(torch.equal(new_state[k], before_state[k]) for k in trunk)
    assert not torch.equal(new_state["sam_mask_decoder.iou_token.weight"],
                           before_state["sam_mask_decoder.iou_token.weight"])
    assert not adapted.model.training
    # seeded: the same prompt and settings give the same weights
    again = adapt_to_prompt(model, [prompt], settings).model.state_dict()
    assert all(torch.equal(again[k], new_state[k]) for k in new_state)


def test_average_last_is_the_mean_of_the_last_steps_weights(model, prompt):
    base = AdaptSettings(steps=3, lr=1e-3, batch_size=1, clip_frames=3, dtype="fp32")
    # the same seeds draw the same steps, so a 2-step run is the 3-step run's path after its second step
    after2 = adapt_to_prompt(model, [prompt], dataclasses.replace(base, steps=2)).model.state_dict()
    after3 = adapt_to_prompt(model, [prompt], base).model.state_dict()
    averaged = adapt_to_prompt(model, [prompt], dataclasses.replace(base, average_last=2))
    assert len(averaged.losses) == 3
    state = averaged.model.state_dict()
    key = "sam_mask_decoder.iou_token.weight"
    assert not torch.allclose(after2[key], after3[key])  # the two steps' weights differ
    for k, v in state.items():
        expected = (after2[k] + after3[k]) / 2 if v.is_floating_point() else after3[k]  # counters: the last
        torch.testing.assert_close(v, expected, msg=k)
    last_only = adapt_to_prompt(model, [prompt], dataclasses.replace(base, average_last=1)).model.state_dict()
    assert all(torch.equal(last_only[k], after3[k]) for k in after3)


def test_seeds_average_the_weights_of_copies_adapted_with_successive_seeds(model, prompt):
    one = AdaptSettings(steps=2, lr=1e-3, batch_size=1, clip_frames=3, dtype="fp32", seed=3)
    first = adapt_to_prompt(model, [prompt], one).model.state_dict()
    second = adapt_to_prompt(model, [prompt], dataclasses.replace(one, seed=4)).model.state_dict()
    reported = []
    soup = adapt_to_prompt(model, [prompt], dataclasses.replace(one, seeds=2),
                           on_step=lambda step, loss: reported.append(step))
    assert reported == [0, 1, 2, 3] and len(soup.losses) == 4
    state = soup.model.state_dict()
    key = "sam_mask_decoder.iou_token.weight"
    assert not torch.allclose(first[key], second[key])  # the two seeds' copies differ
    for k, v in state.items():
        expected = (first[k] + second[k]) / 2 if v.is_floating_point() else first[k]
        torch.testing.assert_close(v, expected, msg=k)
    assert not soup.model.training


@pytest.mark.parametrize("trunk_blocks", [2, None])
def test_trunk_blocks_adapts_only_the_trunk_tail(model, prompt, trunk_blocks):
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = len(model.image_encoder.trunk._blocks)
    settings = AdaptSettings(steps=2, lr=1e-3, batch_size=1, clip_frames=3, dtype="fp32", trunk_blocks=trunk_blocks)
    adapted = adapt_to_prompt(model, [prompt], settings).model
    new_state = adapted.state_dict()
    adapted_blocks = range(blocks - 2, blocks) if trunk_blocks else range(blocks)  # None: every block
    tail = tuple(f"image_encoder.trunk._blocks.{b}." for b in adapted_blocks)
    changed = {k for k in new_state if k.startswith("image_encoder.trunk.")
               and not torch.equal(new_state[k], before_state[k])}
    # the adapted blocks' weights move; nothing else in the trunk does (its stem, batch norm statistics)
    assert changed and all(k.startswith(tail) for k in changed), sorted(changed)
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)
    assert all(any(k.startswith(block) for k in changed) for block in tail)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before_state[key]), key
    assert all(not p.requires_grad for p in model.image_encoder.trunk.parameters())


@pytest.mark.parametrize("settings, expected", [
    (AdaptSettings(steps=-1), "steps must be >= 0"),
    (AdaptSettings(lr=0.0), "learning rate must be > 0"),
    (AdaptSettings(clip_frames=1), ">= 2 frames"),
    (AdaptSettings(dtype="fp16"), "bf16 or fp32"),
    (AdaptSettings(trunk_blocks=-1), "trunk blocks must be >= 0"),
    (AdaptSettings(trunk_blocks=99), "the trunk has 16"),
    (AdaptSettings(steps=10, average_last=11), "0 to 10 last steps"),
    (AdaptSettings(seeds=0), "needs >= 1 seed"),
])
def test_bad_settings_are_refused(model, prompt, settings, expected):
    with pytest.raises(Effsam2Error, match=expected):
        adapt_to_prompt(model, [prompt], settings)


def test_adapting_at_another_size_tracks_at_the_model_size(model, prompt, davis_dir):
    """--adapt-image-size: the weights come from adapting the model built at that size; the result tracks at
    the model's own size (reference: the same adaptation of a model built directly at the small size)."""
    small = SIZE - 32
    (image,), mask = first_frames(davis_dir, SEQUENCE, 1)
    small_prompt = prompt_video(SEQUENCE, image, mask, small)
    settings = AdaptSettings(steps=3, lr=1e-3, batch_size=1, clip_frames=3, dtype="fp32")
    reference = adapt_to_prompt(effsam2.build_model(image_size=small), [small_prompt], settings).model
    adapted = adapt_to_prompt(model, [small_prompt], dataclasses.replace(settings, image_size=small)).model
    assert adapted.image_size == SIZE and reference.image_size == small and not adapted.training
    expected, got, shipped = reference.state_dict(), adapted.state_dict(), model.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert not torch.equal(got["sam_mask_decoder.iou_token.weight"], shipped["sam_mask_decoder.iou_token.weight"])
    with pytest.raises(Effsam2Error, match=f"adapting at {small} needs {small}x{small}"):
        adapt_to_prompt(model, [prompt], dataclasses.replace(settings, image_size=small))
    with pytest.raises(Effsam2Error, match="adaptation image size must be > 0"):
        adapt_to_prompt(model, [prompt], dataclasses.replace(settings, image_size=0))


def test_bad_prompts_are_refused():
    image = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(Effsam2Error, match="mask of x is 32x48, its frame 64x48"):
        prompt_video("x", image, np.ones((48, 32), bool), SIZE)
    with pytest.raises(Effsam2Error, match="needs at least"):
        prompt_video("x", image, np.zeros((48, 64), bool), SIZE)
    with pytest.raises(Effsam2Error, match="uint8 RGB"):
        prompt_video("x", image.astype(np.float32), np.ones((48, 64), bool), SIZE)


def test_eval_adapts_each_sequence(davis_dir, tmp_path, capsys):
    dataset = copy_subset(davis_dir, tmp_path / "davis", (SEQUENCE,), 4)
    out = tmp_path / "out"
    code = main(["eval", "--dataset", str(dataset), "--model", "default", "--image-size", str(SIZE),
                 "--adapt-steps", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "adapting to each sequence's first-frame masks, 2 steps" in captured.err
    assert f"adapting to {SEQUENCE}" in captured.err and "loss=" in captured.err  # the per-step bar
    pngs = sorted((out / "predictions" / SEQUENCE).glob("*.png"))
    assert len(pngs) == 4
    masks = [np.asarray(Image.open(p)) == 1 for p in pngs]
    assert all(0 < m.sum() < m.size for m in masks)


def test_eval_adapts_a_soup_of_seeds(davis_dir, tmp_path, capsys):
    dataset = copy_subset(davis_dir, tmp_path / "davis", (SEQUENCE,), 3)
    out = tmp_path / "out"
    code = main(["eval", "--dataset", str(dataset), "--model", "default", "--image-size", str(SIZE),
                 "--adapt-steps", "2", "--adapt-seeds", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "the mean of 2 seeds' weights" in captured.err and "4/4" in captured.err  # the bar counts both copies
    masks = [np.asarray(Image.open(p)) == 1 for p in sorted((out / "predictions" / SEQUENCE).glob("*.png"))]
    assert len(masks) == 3 and all(0 < m.sum() < m.size for m in masks)


def test_eval_adapts_at_another_size(davis_dir, tmp_path, capsys):
    dataset = copy_subset(davis_dir, tmp_path / "davis", (SEQUENCE,), 3)
    out = tmp_path / "out"
    code = main(["eval", "--dataset", str(dataset), "--model", "default", "--image-size", str(SIZE + 32),
                 "--adapt-steps", "2", "--adapt-image-size", str(SIZE), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"at {SIZE + 32}px" in captured.err and f"the trunk frozen, at {SIZE}px" in captured.err
    masks = [np.asarray(Image.open(p)) == 1 for p in sorted((out / "predictions" / SEQUENCE).glob("*.png"))]
    assert len(masks) == 3 and all(0 < m.sum() < m.size for m in masks)


@pytest.mark.parametrize("extra, expected", [
    (["--adapt-steps", "5", "--prompt", "box"], "--adapt-steps adapts the model to the first-frame mask"),
    (["--adapt-steps", "-2"], "steps must be >= 0"),
    (["--adapt-steps", "5", "--adapt-lr", "0"], "learning rate must be > 0"),
    (["--adapt-steps", "5", "--adapt-trunk-blocks", "-1"], "trunk blocks must be >= 0"),
    (["--adapt-steps", "5", "--adapt-trunk-blocks", "17", "--sequences", SEQUENCE], "the trunk has 16"),
    (["--adapt-steps", "5", "--adapt-image-size", "100", "--sequences", SEQUENCE], "multiple of 32"),
    (["--adapt-steps", "5", "--adapt-seeds", "0"], "needs >= 1 seed"),
])
def test_eval_adapt_errors_are_one_line(davis_dir, tmp_path, capsys, extra, expected):
    code = main(["eval", "--dataset", str(davis_dir), "--model", "default", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    # one error line, the last; a check that needs the built model follows eval's what-runs lines
    lines = err.strip().splitlines()
    assert "Traceback" not in err and expected in lines[-1]
    assert [line for line in lines if "error" in line] == lines[-1:]
    assert not (tmp_path / "out").exists()


def test_trunk_blocks_option_takes_a_number_or_all(davis_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_adapt_options(parser, "a mask")
    assert parser.parse_args([]).adapt_trunk_blocks == AdaptSettings.trunk_blocks == 0
    assert parser.parse_args(["--adapt-trunk-blocks", "all"]).adapt_trunk_blocks is None
    assert parser.parse_args(["--adapt-trunk-blocks", "3"]).adapt_trunk_blocks == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--dataset", str(davis_dir), "--model", "default", "--adapt-steps", "5",
              "--adapt-trunk-blocks", "some", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines()[-1].endswith("expected a number of blocks or 'all', got 'some'"), err
    assert not (tmp_path / "out").exists()


def _track(dataset, out, *extra) -> int:
    frames = dataset / "JPEGImages" / "480p" / SEQUENCE
    mask = dataset / "Annotations" / "480p" / SEQUENCE / "00000.png"
    return main(["track", str(frames), "--mask", str(mask), "--model", "default", "--image-size", str(SIZE),
                 "--format", "png", "--out", str(out), *extra])


def test_track_adapts_to_the_mask_prompt(davis_dir, tmp_path, capsys):
    dataset = copy_subset(davis_dir, tmp_path / "davis", (SEQUENCE,), 4)
    truth = [np.asarray(Image.open(p)) > 0 for p in sorted((dataset / "Annotations" / "480p" / SEQUENCE).glob("*"))]
    results = {}
    for steps in ("0", "3"):
        out = tmp_path / f"out{steps}"
        code = _track(dataset, out, "--adapt-steps", steps)
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert ("adapting" in captured.err) == (steps != "0")
        assert ("loss=" in captured.err) == (steps != "0")  # the bar shows the running loss
        pngs = sorted((out / "masks").glob("*.png"))
        assert len(pngs) == 4
        results[steps] = [np.asarray(Image.open(p)) == 1 for p in pngs]
    for masks in results.values():
        assert all(0 < m.sum() < m.size for m in masks)
        # a real accuracy check on frames after the prompt (loose: 128 px input)
        assert np.mean([region_similarity(m, t) for m, t in zip(masks[1:], truth[1:])]) > 0.5
    # the adapted copy is what tracked: its masks are not the plain model's
    assert any((a != b).any() for a, b in zip(results["0"][1:], results["3"][1:]))


@pytest.mark.parametrize("prompt, expected", [
    (["--point", "400,200"], "object 1 needs --mask, not clicks or a box"),
    (["--mask", "tiny"], "needs at least"),
    (["--mask", "full", "--adapt-lr", "-1"], "learning rate must be > 0"),
    (["--mask", "full", "--adapt-trunk-blocks", "17"], "the trunk has 16"),
    (["--mask", "full", "--adapt-image-size", "100"], "multiple of 32"),
])
def test_track_adapt_errors_are_one_line(davis_dir, tmp_path, capsys, prompt, expected):
    dataset = copy_subset(davis_dir, tmp_path / "davis", (SEQUENCE,), 2)
    frames = dataset / "JPEGImages" / "480p" / SEQUENCE
    if prompt[0] == "--mask":
        h, w = np.asarray(Image.open(frames / "00000.jpg")).shape[:2]
        mask = np.zeros((h, w), np.uint8)
        if prompt[1] == "tiny":
            mask[10, 10] = 255
        else:
            mask[100:300, 200:500] = 255
        Image.fromarray(mask).save(tmp_path / "mask.png")
        prompt = ["--mask", str(tmp_path / "mask.png"), *prompt[2:]]
    out = tmp_path / "out"
    code = main(["track", str(frames), *prompt, "--adapt-steps", "2", "--model", "default", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
