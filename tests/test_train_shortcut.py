"""``effsam2 train-shortcut``: it lowers the reconstruction loss on a real clip, an interrupted run resumes
exactly where its last checkpoint left off, and user errors exit with code 2 and one line."""

import pytest
import torch

from effsam2.accel.shortcut import load_shortcut, new_shortcut
from effsam2.build import build_model
from effsam2.checkpoint import read_safetensors_metadata, save_state_dict
from effsam2.cli import main
from effsam2.errors import Effsam2Error
from effsam2.train.clips import find_videos, load_clip, plan_clips
from effsam2.train.shortcut import TrainSettings, clip_losses, state_path, train_shortcut
from tests.helpers.weights import perturb_weights

MODEL, SIZE, FRAMES = "sam2.1_hiera_t", 512, 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random weights that track non-degenerately (REFERENCE recipe) with small masks: the mask
    hypernetworks' output bias is lowered so foreground covers a few windows and the router keeps
    only part of the 9 windows (with raw random weights every window holds foreground)."""
    torch.manual_seed(0)
    model = build_model(MODEL, image_size=SIZE)
    perturb_weights(model)
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].bias.sub_(0.5)
    path = tmp_path_factory.mktemp("ckpt") / "t_random.safetensors"
    save_state_dict(model.state_dict(), path)
    return path


def cli_args(checkpoint, video, out, *extra):
    return ["train-shortcut", "--model", MODEL, "--checkpoint", str(checkpoint), "--videos", str(video),
            "--clips", "1", "--epochs", "2", "--frames-per-clip", str(FRAMES), "--image-size", str(SIZE),
            "--lr", "1e-3", "--out", str(out), "--quiet", *extra]


class Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.slow
def test_train_lowers_loss_and_resumes_exactly(checkpoint, videos_dir, tmp_path):
    video = videos_dir / "01_dog.mp4"
    # run A: uninterrupted, through the command line
    out_a = tmp_path / "a.safetensors"
    assert main(cli_args(checkpoint, video, out_a)) == 0
    assert out_a.exists() and not state_path(out_a).exists()
    assert read_safetensors_metadata(out_a)["steps_done"] == "2"

    model = build_model(MODEL, checkpoint, image_size=SIZE)
    clips = plan_clips(find_videos([video]), 1, FRAMES)
    settings = TrainSettings(MODEL, SIZE, clips, epochs=2, lr=1e-3)

    # the trained shortcut reconstructs the dense memory-conditioned features better than its init
    frames = load_clip(clips[0], SIZE)
    torch.manual_seed(settings.seed)
    before = clip_losses(model, new_shortcut(model.config).eval(), frames)
    after = clip_losses(model, load_shortcut(out_a, model.config), frames)
    assert before.routed_frames == FRAMES - 1 and 0 < before.window_fraction < 1  # routing really happened
    assert after.loss < before.loss * 0.98

    # run B: interrupted after its first step, then resumed
    out_b = tmp_path / "b.safetensors"

    def stop(step, result):
        if step == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_shortcut(model, settings, out_b, progress=False, on_step=stop)
    saved = torch.load(state_path(out_b), weights_only=True)
    assert saved["step"] == 1 and read_safetensors_metadata(out_b)["steps_done"] == "1"
    with pytest.raises(Effsam2Error, match="other settings"):  # the state belongs to these settings only
        train_shortcut(model, TrainSettings(MODEL, SIZE, clips, epochs=2, lr=2e-3), out_b, progress=False)
    history = train_shortcut(model, settings, out_b, progress=False)
    assert [h["step"] for h in history] == [1, 2] and not state_path(out_b).exists()
    a, b = load_shortcut(out_a, model.config), load_shortcut(out_b, model.config)
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key  # same RNG, optimizer and data as run A


def one_line_error(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err
    return err


def test_cli_errors(capsys, checkpoint, videos_dir, tmp_path):
    video = videos_dir / "01_dog.mp4"
    out = tmp_path / "s.safetensors"
    one_line_error(capsys, cli_args(tmp_path / "missing.pt", video, out), "checkpoint not found")
    one_line_error(capsys, cli_args(checkpoint, tmp_path / "missing.mp4", out), "missing.mp4", "no such")
    argv = cli_args(checkpoint, video, out)
    argv[argv.index(MODEL)] = "sam2.1_hiera_xl"
    one_line_error(capsys, argv, "unknown model name 'sam2.1_hiera_xl'")
    one_line_error(capsys, cli_args(checkpoint, video, tmp_path / "s.pt"), "--out must be a .safetensors")
    one_line_error(capsys, cli_args(checkpoint, video, out, "--resume"), "nothing to resume")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, cli_args(checkpoint, empty, out), "no videos")
    argv = cli_args(checkpoint, video, out)
    argv[argv.index("--frames-per-clip") + 1] = "1000"
    one_line_error(capsys, argv, "fewer than the 1000 frames")
    wrong = tmp_path / "wrong.safetensors"  # a checkpoint of another model
    save_state_dict({"image_encoder.trunk.pos_embed": torch.zeros(1)}, wrong)
    one_line_error(capsys, cli_args(wrong, video, out), "not a sam2.1_hiera_t checkpoint")
    one_line_error(capsys, cli_args(checkpoint, video, out, "--device", "foo"), "unknown --device 'foo'")
    if not torch.cuda.is_available():
        one_line_error(capsys, cli_args(checkpoint, video, out, "--device", "cuda"), "CUDA is not available")
    assert not out.exists()


def test_tracking_step_on_given_conditioned_features_equals_the_plain_step(davis_dir):
    """The trainer hands the memory-conditioned features it already computed to ``track_step(conditioned=)``;
    that step must be the plain tracking step (the trainer's dense pass is the predictor's)."""
    import numpy as np
    from PIL import Image

    from effsam2.modeling.tracker import ObjectMemory, condition_on_memory, track_step
    from effsam2.train.vos_step import encode_clip, normalise

    model = build_model()  # the default model: trained weights, real masks
    size = model.config.image_size
    paths = sorted((davis_dir / "JPEGImages" / "480p" / "dog").glob("*.jpg"))[:2]
    frames = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((size, size))))
                          .permute(2, 0, 1).float() / 255 for p in paths])
    mask = np.asarray(Image.open(davis_dir / "Annotations" / "480p" / "dog" / "00000.png").resize((size, size)))
    feats = encode_clip(model, normalise(frames)[:, None])
    memory = ObjectMemory()
    with torch.no_grad():
        memory.cond[0] = track_step(model, 0, feats[0], memory, is_init_cond_frame=True, num_frames=2,
                                    mask_inputs=torch.from_numpy(mask > 0).float()[None, None]).entry
        plain = track_step(model, 1, feats[1], memory, is_init_cond_frame=False, num_frames=2)
        pix = condition_on_memory(model, 1, False, feats[1], memory, 2, False)
        given = track_step(model, 1, feats[1], memory, is_init_cond_frame=False, num_frames=2, conditioned=pix)
    assert 0.01 < (plain.high_res_masks > 0).float().mean().item() < 0.5  # the dog, not degenerate
    assert torch.equal(plain.high_res_masks, given.high_res_masks)
    assert torch.equal(plain.entry.maskmem_features, given.entry.maskmem_features)
    assert torch.equal(plain.entry.obj_ptr, given.entry.obj_ptr)
