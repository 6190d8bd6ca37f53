"""`effsam2 train` on a few real frames: the loss goes down, an interrupted run resumes bit for bit, and bad
input is a one-line error that leaves nothing behind."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from effsam2.build import build_model
from effsam2.checkpoint import read_state_dict
from effsam2.cli import main
from effsam2.errors import Effsam2Error
from effsam2.train import vos_trainer
from effsam2.train.clip_sampler import ClipSettings, add_twin, sample_clip
from effsam2.train.losses import memory_mask_loss
from effsam2.train.prefetch import ClipPrefetcher, draw_step, step_seed
from effsam2.train.validate import background_square, validate
from effsam2.train.vos_data import load_videos
from effsam2.train.vos_trainer import TrainSettings, make_optimizer, train, train_step

SIZE = 128
SEQUENCES = ("bear", "boat", "elephant")
FRAMES = 6


@pytest.fixture(scope="module")
def tiny_davis(shared_dir, tmp_path_factory):
    """Three real training sequences, their first frames only, in the DAVIS layout."""
    src = shared_dir / "data" / "davis2016-train"
    root = tmp_path_factory.mktemp("davis_tiny")
    for name in SEQUENCES:
        for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
            out = root / kind / "360p" / name
            out.mkdir(parents=True)
            for i in range(FRAMES):
                shutil.copy(src / kind / "360p" / name / f"{i:05d}{suffix}", out)
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("\n".join(SEQUENCES) + "\n")
    return root


def settings(root, steps: int, **kw) -> TrainSettings:
    base = {"model": "effsam2_lite0", "image_size": SIZE, "data": str(root), "train_sequences": SEQUENCES[:2],
            "val_sequences": SEQUENCES[2:], "steps": steps, "batch_size": 1, "warmup": 1, "val_every": 2,
            "val_frames": 4, "clips": ClipSettings(frames=3)}
    return TrainSettings(**(base | kw))


def test_clips_are_real_masked_frames(tiny_davis):
    videos = load_videos(tiny_davis, list(SEQUENCES), SIZE)
    assert videos[0].frames.shape == (FRAMES, SIZE, SIZE, 3) and videos[0].masks.shape == (FRAMES, 1, SIZE, SIZE)
    for step in range(6):
        frames, masks = sample_clip(np.random.default_rng([0, step]), videos, ClipSettings(frames=3))
        assert frames.shape == (3, 3, SIZE, SIZE) and masks.shape == (3, 1, SIZE, SIZE)
        assert 0 <= frames.min() and frames.max() <= 1 and frames.std() > 0.05
        assert 0 < masks[0].mean() < 1  # the prompt frame shows the object
    a = sample_clip(np.random.default_rng([0, 3]), videos, ClipSettings(frames=3))
    b = sample_clip(np.random.default_rng([0, 3]), videos, ClipSettings(frames=3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # the step decides the clip


def test_a_twin_is_the_target_itself_beside_it_and_not_in_its_mask(tiny_davis):
    videos = load_videos(tiny_davis, ["bear"], SIZE)
    frames = torch.from_numpy(videos[0].frames[:3]).permute(0, 3, 1, 2).float() / 255
    masks = torch.from_numpy(videos[0].masks[:3]).float()
    twin_frames, twin_masks = add_twin(np.random.default_rng(1), frames, masks)
    changed = (twin_frames - frames).abs().sum(1, keepdim=True) > 1e-3
    assert changed.float().mean() > 0.02  # a twin was pasted
    assert not (changed & (twin_masks > 0)).any()  # never inside what is still the target
    assert torch.equal(twin_masks, masks * (twin_masks > 0))  # the target only loses where the twin covers it
    # the twin's pixels are the target's, moved: on each frame they carry about the target's colour mass
    target_mass = (frames * masks).sum(dim=(1, 2, 3))
    twin_mass = (twin_frames * changed).sum(dim=(1, 2, 3))
    assert torch.allclose(twin_mass, target_mass, rtol=0.2)


def test_training_lowers_the_loss_on_real_frames(tiny_davis):
    s = settings(tiny_davis, steps=100, lr=1e-3)
    videos = load_videos(tiny_davis, list(s.train_sequences), SIZE)
    torch.manual_seed(0)
    model = build_model("effsam2_lite0", image_size=SIZE)
    optimizer = make_optimizer(model, s)
    # the same step index draws the same clip and prompt: the model must fit it
    losses = [train_step(model, optimizer, videos, 7, s)["loss"] for _ in range(12)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert not any(p.grad is not None for p in model.image_encoder.trunk.parameters())  # the trunk is frozen


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_bit_for_bit(tiny_davis, tmp_path, monkeypatch):
    s = settings(tiny_davis, steps=4)
    videos = load_videos(tiny_davis, list(s.train_sequences), SIZE)
    val = load_videos(tiny_davis, list(s.val_sequences), SIZE)

    def fresh_model():
        torch.manual_seed(0)
        return build_model("effsam2_lite0", image_size=SIZE)

    straight = train(fresh_model(), videos, val, s, tmp_path / "straight", save_every=2, progress=False)

    real_step = vos_trainer.train_step

    def interrupted(model, optimizer, videos, step, s, **kw):
        if step == 2:
            raise Interrupt
        return real_step(model, optimizer, videos, step, s, **kw)

    monkeypatch.setattr(vos_trainer, "train_step", interrupted)
    with pytest.raises(Interrupt):
        train(fresh_model(), videos, val, s, tmp_path / "resumed", save_every=2, progress=False)
    assert read_state_dict(tmp_path / "resumed" / "last.safetensors") is not None
    monkeypatch.setattr(vos_trainer, "train_step", real_step)
    # a new process: a model that has not seen the first run, resuming from the run folder
    resumed = train(fresh_model(), videos, val, s, tmp_path / "resumed", save_every=2, progress=False)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    a = read_state_dict(tmp_path / "straight" / "last.safetensors")
    b = read_state_dict(tmp_path / "resumed" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "resumed" / "loss.csv").read_text() == (tmp_path / "straight" / "loss.csv").read_text()
    assert (tmp_path / "resumed" / "best.safetensors").exists()


def _fresh_model():
    torch.manual_seed(0)
    return build_model("effsam2_lite0", image_size=SIZE)


def _same_weights(a_dir, b_dir) -> bool:
    a = read_state_dict(a_dir / "last.safetensors")
    b = read_state_dict(b_dir / "last.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_clips_drawn_by_worker_processes_train_the_same_weights(tiny_davis, tmp_path):
    # twins and distractors on, so that drawing a clip uses every kind of randomness it has
    s = settings(tiny_davis, steps=3, batch_size=2, clips=ClipSettings(frames=3, distractor_prob=1.0, twin_prob=0.5))
    videos = load_videos(tiny_davis, list(s.train_sequences), SIZE)
    val = load_videos(tiny_davis, list(s.val_sequences), SIZE)
    in_place = train(_fresh_model(), videos, val, s, tmp_path / "in_place", progress=False)
    ahead = train(_fresh_model(), videos, val, s, tmp_path / "workers", progress=False, workers=2)
    assert len(ahead) == 3 and np.isfinite([r["loss"] for r in ahead]).all()
    assert [r["loss"] for r in ahead] == [r["loss"] for r in in_place]
    assert _same_weights(tmp_path / "in_place", tmp_path / "workers")
    # and the steps really differ from one another (a worker handing back one step twice would not pass)
    assert len({r["loss"] for r in ahead}) == 3


def test_a_deadline_ends_the_run_saved_and_it_resumes_to_the_uninterrupted_run(tiny_davis, tmp_path):
    s = settings(tiny_davis, steps=3, val_every=2)
    videos = load_videos(tiny_davis, list(s.train_sequences), SIZE)
    val = load_videos(tiny_davis, list(s.val_sequences), SIZE)
    straight = train(_fresh_model(), videos, val, s, tmp_path / "straight", progress=False)
    cut = train(_fresh_model(), videos, val, s, tmp_path / "cut", progress=False, deadline=time.monotonic())
    assert [r["step"] for r in cut] == [0] and cut[0].get("val_j") is None  # one step, not validated out of turn
    state = torch.load(vos_trainer.state_file(tmp_path / "cut"), weights_only=True)
    assert state["next_step"] == 1 and not (tmp_path / "cut" / "best.safetensors").exists()
    resumed = train(_fresh_model(), videos, val, s, tmp_path / "cut", progress=False, workers=1)
    assert [r["step"] for r in resumed] == [0, 1, 2]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    assert _same_weights(tmp_path / "straight", tmp_path / "cut")
    assert (tmp_path / "cut" / "loss.csv").read_text() == (tmp_path / "straight" / "loss.csv").read_text()
    a = read_state_dict(tmp_path / "straight" / "best.safetensors")
    b = read_state_dict(tmp_path / "cut" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # what --export writes is the same too


def test_a_drawn_step_hands_back_the_generators_as_drawing_left_them(tiny_davis):
    videos = load_videos(tiny_davis, ["bear"], SIZE)
    clips = ClipSettings(frames=3, distractor_prob=1.0)
    rng = np.random.default_rng([0, 3])
    torch.manual_seed(step_seed(0, 3))
    sample_clip(rng, videos, clips)
    expected_numpy, expected_torch = rng.random(4), torch.rand(4)  # what the step would draw next, in place
    drawn = draw_step(videos, 3, 0, 1, clips)
    torch.manual_seed(123)  # whatever happened to the generators since
    handed_back = drawn.generator()
    assert np.array_equal(handed_back.random(4), expected_numpy) and torch.equal(torch.rand(4), expected_torch)


def test_a_failing_clip_worker_is_a_one_line_error_and_leaving_stops_every_worker(tiny_davis):
    with ClipPrefetcher([], 0, 4, 1, 0, 1, ClipSettings(frames=3)) as failing:  # no videos to draw from
        with pytest.raises(Effsam2Error, match="clip worker 0 failed on step 0: ") as err:
            failing.take(0)
        assert "\n" not in str(err.value)
    assert not any(p.is_alive() for p in failing.processes)
    videos = load_videos(tiny_davis, ["bear"], SIZE)
    with ClipPrefetcher(videos, 5, 40, 2, 0, 1, ClipSettings(frames=3)) as early:
        assert early.take(5).step == 5 and early.take(6).step == 6
        with pytest.raises(Effsam2Error, match="step 9 asked for, 7 is next"):
            early.take(9)
    assert not any(p.is_alive() for p in early.processes)  # 33 steps were never taken


def test_the_command_stops_at_its_time_budget_and_says_so(tiny_davis, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_davis), "--out", str(out), "--image-size", str(SIZE), "--steps", "3",
                 "--batch-size", "1", "--frames", "3", "--val-sequences", "elephant", "--max-minutes", "0",
                 "--workers", "1", "--quiet", "--export", str(tmp_path / "best.safetensors")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "stopped by --max-minutes at step 1 of 3" in captured.out and "best held-out J" not in captured.out
    assert read_state_dict(tmp_path / "best.safetensors") is not None


@pytest.mark.parametrize("extra,expected", [
    (["--workers", "-1"], "--workers must be at least 0, got -1"),
    (["--max-minutes", "-2"], "--max-minutes must be at least 0, got -2.0"),
])
def test_bad_workers_or_budget_are_one_line_and_leave_nothing(extra, expected, tiny_davis, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_davis), "--out", str(out), "--image-size", str(SIZE), "--steps", "1",
                 "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_command_trains_from_the_seeded_initialisation_not_the_shipped_weights(tiny_davis, tmp_path, capsys):
    def one_step(out, seed):
        args = ["train", "--data", str(tiny_davis), "--out", str(out), "--image-size", str(SIZE), "--steps", "1",
                "--batch-size", "1", "--frames", "3", "--val-sequences", "", "--lr", "1e-9", "--seed", str(seed),
                "--quiet"]
        assert main(args) == 0, capsys.readouterr().err
        return read_state_dict(out / "last.safetensors")

    a, b, c = one_step(tmp_path / "a", 0), one_step(tmp_path / "b", 0), one_step(tmp_path / "c", 1)
    torch.manual_seed(0)
    initial = build_model("effsam2_lite0", image_size=SIZE, shipped=False).state_dict()
    shipped = build_model("effsam2_lite0", image_size=SIZE).state_dict()
    key = "sam_mask_decoder.iou_token.weight"
    assert torch.equal(a[key], b[key])  # the same --seed, the same run
    assert (a[key] - c[key]).abs().max() > 0.05  # another seed, another initialisation
    assert (a[key] - initial[key]).abs().max() < 1e-6  # one step at lr 1e-9 from the seeded initialisation
    assert (a[key] - shipped[key]).abs().max() > 0.05


def test_resuming_with_other_settings_is_refused(tiny_davis, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--data", str(tiny_davis), "--out", str(out), "--image-size", str(SIZE), "--steps", "1",
            "--batch-size", "1", "--frames", "3", "--val-sequences", "elephant", "--quiet"]
    assert main(base) == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"last.safetensors", "best.safetensors", "train-state.pt",
                                                "loss.csv", "loss.png", "settings.json"}
    code = main(base[:-1] + ["--lr", "1e-2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "other settings (lr)" in err and len(err.strip().splitlines()) == 1


def _mismatched(tiny_davis, tmp_path, kind):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_davis, bad)
    seq = bad / "Annotations" / "360p" / "boat"
    if kind == "missing":
        (seq / "00003.png").unlink()
    else:
        Image.open(seq / "00002.png").resize((320, 180)).save(seq / "00002.png")
    return bad


@pytest.mark.parametrize("case,expected", [
    ("no-data", "training data folder not found"),
    ("missing-mask", "boat: 1 of 6 frames have no mask (first: 00003)"),
    ("mask-size", "boat: mask 00002.png is 320x180, its frame 640x360"),
    ("unknown-model", "unknown model name 'sam3'"),
    ("bad-val", "--val-sequences: nope not in"),
])
def test_bad_input_is_one_line_and_leaves_nothing(case, expected, tiny_davis, tmp_path, capsys):
    data, model = tiny_davis, "default"
    if case == "no-data":
        data = tmp_path / "nothing"
    elif case == "missing-mask":
        data = _mismatched(tiny_davis, tmp_path, "missing")
    elif case == "mask-size":
        data = _mismatched(tiny_davis, tmp_path, "size")
    elif case == "unknown-model":
        model = "sam3"
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--model", model, "--image-size", str(SIZE),
            "--steps", "1", "--quiet", "--val-sequences", "nope" if case == "bad-val" else "elephant"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_an_official_model_fine_tunes_with_a_low_trunk_lr(tiny_davis, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ft"
    code = main(["train", "--model", "sam2.1_hiera_t", "--checkpoint", str(tiny_checkpoint), "--data",
                 str(tiny_davis), "--out", str(out), "--image-size", str(SIZE), "--steps", "1", "--batch-size", "1",
                 "--frames", "3", "--trunk-lr", "1e-6", "--val-sequences", "", "--quiet"])
    assert code == 0, capsys.readouterr().err
    before = read_state_dict(tiny_checkpoint)
    after = read_state_dict(out / "last.safetensors")
    assert set(after) == set(before)  # a full checkpoint: the trunk was trained too
    key = "image_encoder.trunk.blocks.0.attn.qkv.weight"
    assert not torch.equal(after[key], before[key])
    moved = (after[key] - before[key]).abs().max()
    head = "sam_mask_decoder.iou_token.weight"
    assert moved < (after[head] - before[head]).abs().max()  # the trunk moved less than the heads


def test_our_model_trains_its_trunk_tail_and_the_run_carries_the_trunk(tiny_davis, tmp_path, capsys):
    from effsam2.families.effsam2_lite import imagenet_trunk_state

    out = tmp_path / "trunk"
    code = main(["train", "--data", str(tiny_davis), "--out", str(out), "--image-size", str(SIZE), "--steps", "2",
                 "--batch-size", "1", "--frames", "3", "--trunk-lr", "1e-4", "--trunk-blocks", "2",
                 "--val-sequences", "elephant", "--quiet"])
    assert code == 0, capsys.readouterr().err
    imagenet = imagenet_trunk_state("lite0")
    depth = 1 + max(int(k.split(".")[1]) for k in imagenet if k.startswith("_blocks."))
    for name in ("last.safetensors", "best.safetensors"):
        after = read_state_dict(out / name)
        trunk = {k.removeprefix("image_encoder.trunk."): v for k, v in after.items()
                 if k.startswith("image_encoder.trunk.")}
        assert trunk.keys() == imagenet.keys()  # the run holds the whole trunk, as the model loads it
        changed = {k for k in trunk if not torch.equal(trunk[k], imagenet[k])}
        tail = {f"_blocks.{b}." for b in (depth - 2, depth - 1)}
        assert changed and all(k.startswith(tuple(tail)) for k in changed)  # only the last two blocks
        assert not any("running_" in k for k in changed)  # batch-norm statistics stay ImageNet's
    # the trained trunk is what the model then runs, not the package's
    model = build_model("effsam2_lite0", out / "last.safetensors", image_size=SIZE)
    loaded = model.image_encoder.trunk.state_dict()
    assert all(torch.equal(loaded[k], trunk[k]) for k in trunk)


@pytest.mark.parametrize("extra,expected", [
    (["--trunk-blocks", "2"], "--trunk-blocks needs a positive number of blocks (or all) and a --trunk-lr above 0"),
    (["--trunk-lr", "1e-5", "--trunk-blocks", "0"], "--trunk-blocks needs a positive number"),
    (["--trunk-lr", "1e-5", "--trunk-blocks", "99"], "cannot fine-tune the last 99 trunk blocks: the trunk has 16"),
])
def test_bad_trunk_blocks_are_one_line_and_leave_nothing(extra, expected, tiny_davis, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_davis), "--out", str(out), "--image-size", str(SIZE), "--steps", "1",
                 "--val-sequences", "elephant", "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_memory_mask_loss_rewards_only_a_memory_that_carries_the_encoded_mask(tiny_davis):
    videos = load_videos(tiny_davis, ["bear"], SIZE)
    mask = torch.from_numpy(videos[0].masks[:1]).float()  # (1, 1, S, S) a real object mask
    assert 0.02 < mask.mean() < 0.98
    logits = (mask - 0.5) * 40  # the encoded mask, as logits
    grid = torch.nn.functional.adaptive_avg_pool2d(mask, (SIZE // 16, SIZE // 16))
    carrying = torch.randn(1, 64, SIZE // 16, SIZE // 16)
    carrying[:, 0] = torch.logit(grid[:, 0].clamp(0.01, 0.99))
    ignoring = carrying.clone()
    ignoring[:, 0] = torch.logit(grid.mean()).expand_as(grid[:, 0])  # the same everywhere: no mask in it
    inverted = carrying.clone()
    inverted[:, 0] = -carrying[:, 0]
    carry, ignore, invert = (float(memory_mask_loss(f, logits)) for f in (carrying, ignoring, inverted))
    assert carry < 0.5 * ignore < invert, (carry, ignore, invert)


def test_training_with_the_memory_mask_loss_teaches_the_memory_to_carry_the_mask(tiny_davis):
    s = settings(tiny_davis, steps=100, lr=1e-3, memory_mask_loss=1.0)
    videos = load_videos(tiny_davis, list(s.train_sequences), SIZE)
    torch.manual_seed(0)
    model = build_model("effsam2_lite0", image_size=SIZE)
    optimizer = make_optimizer(model, s)
    rows = [train_step(model, optimizer, videos, 7, s) for _ in range(12)]
    readout = [r["memory"] for r in rows]
    assert np.isfinite(readout).all() and readout[0] > 0.05
    assert np.mean(readout[-3:]) < 0.7 * np.mean(readout[:3]), readout
    assert "memory" not in train_step(model, optimizer, videos, 7, settings(tiny_davis, steps=100))  # off by default


def test_a_negative_memory_mask_loss_is_one_line_and_leaves_nothing(tiny_davis, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_davis), "--out", str(out), "--image-size", str(SIZE), "--steps", "1",
                 "--memory-mask-loss", "-1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--memory-mask-loss must be at least 0, got -1.0" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_background_square_has_the_object_area_and_lies_away_from_it(tiny_davis):
    videos = load_videos(tiny_davis, list(SEQUENCES), SIZE)
    for video in videos:
        mask = video.masks[0, 0] > 0
        square = background_square(mask)
        assert abs(int(square.sum()) - int(mask.sum())) <= 2 * np.sqrt(mask.sum()) + 1
        assert (square & mask).sum() < 0.5 * mask.sum()  # mostly background
    corner = np.zeros((SIZE, SIZE), bool)
    corner[:20, :30] = True  # top left: the square goes bottom right, touching no object pixel
    square = background_square(corner)
    assert square[-1, -1] and not (square & corner).any() and square.sum() == 24 * 24


def test_validation_reports_j_and_how_much_the_masks_depend_on_the_prompt(tiny_davis, tmp_path, monkeypatch):
    s = settings(tiny_davis, steps=2)
    videos = load_videos(tiny_davis, list(s.train_sequences), SIZE)
    val_videos = load_videos(tiny_davis, list(s.val_sequences), SIZE)
    model = build_model("effsam2_lite0", image_size=SIZE).train()
    checked = validate(model, val_videos, 4)
    assert 0 <= checked.j <= 1 and 0 <= checked.prompt_agreement <= 1
    assert model.training  # validation leaves the mode it found
    # the agreement compares the two trackings with each other: given the same prompt twice it is exactly 1
    monkeypatch.setattr("effsam2.train.validate.background_square", lambda mask: mask)
    same = validate(model, val_videos, 4)
    assert same.prompt_agreement == 1.0 and same.j == checked.j
    monkeypatch.undo()
    # then training the same model: what validation cached under inference mode (RoPE and position tables,
    # pooled cells) must not break the backward pass
    train(model, videos, val_videos, s, tmp_path, progress=False)
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(",")))
    assert last["val_j"] and 0 <= float(last["val_prompt_agreement"]) <= 1
