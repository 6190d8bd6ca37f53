"""``effsam2 bench`` end to end on a tiny configuration, and its answers to bad input."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from effsam2.bench.frames import default_video
from effsam2.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPONENTS = ("image_encoder", "memory_attention", "memory_encoder", "mask_decoder")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, videos_dir):
    """sam2.1_hiera_t at 256, 1 object, 2 frames: dense and SWR (half the windows) in our loop, dense in the
    VideoPredictor loop, and the official row when the oracle is installed."""
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "bench.json", "md": out / "bench.md", "png": out / "bench.png"}
    argv = ["bench", "--model", "sam2.1_hiera_t", "--image-size", "256", "--accel", "dense,swr", "--swr-fraction",
            "0.5", "--objects", "1",
            "--frames", "2", "--warmup", "1", "--repeats", "1", "--video", str(videos_dir / "bedroom.mp4"),
            "--loop", "steps,predictor",
            "--json", str(paths["json"]), "--markdown", str(paths["md"]), "--plot", str(paths["png"])]
    try:
        import sam2  # noqa: F401

        argv.append("--against-official")
    except ImportError:
        pass
    assert main(argv) == 0
    return paths, json.loads(paths["json"].read_text())


def test_smoke_json_records(smoke_run):
    _, records = smoke_run
    dense = records[0]
    assert (dense["model"], dense["accel"], dense["image_size"], dense["objects"], dense["loop"]) == (
        "sam2.1_hiera_t", "dense", 256, 1, "steps")
    assert dense["error"] is None and dense["device"] == "cpu" and dense["dtype"] == "fp32"
    ms = dense["ms"]
    assert all(ms[c] > 0 for c in COMPONENTS)
    # the components are disjoint sections inside the frame, and the step contains three of them
    assert ms["frame"] >= sum(ms[c] for c in COMPONENTS)
    assert ms["track_step"] >= ms["memory_attention"] + ms["memory_encoder"] + ms["mask_decoder"]
    assert dense["peak_mem_mb"] > dense["base_mem_mb"] > 0
    assert dense["speedup_vs_dense"] == 1.0
    # the random weights track something: masks with both signs, objects present
    assert 0.01 < dense["mask_fg_fraction"] < 0.99 and dense["object_score_mean"] > 0
    machine = dense["machine"]
    assert machine["torch"] and machine["cpu"] and machine["torch_threads"] >= 1


def test_smoke_swr_row_routes_the_forced_fraction(smoke_run):
    _, records = smoke_run
    row = next(r for r in records if r["accel"] == "swr" and r["loop"] == "steps")
    if importlib.util.find_spec("effsam2.accel.swr") is None:
        assert row["error"].startswith("swr unavailable") and row["ms"] == {}
        return
    assert row["error"] is None and row["accel_options"]["swr_fraction"] == 0.5
    # tiny at 256: a 16x16 stage-3 map in 14x14 windows -> 4 windows, 2 of them on the measured frame
    assert row["accel_stats"]["swr_window_fraction"] == 0.5
    assert all(row["ms"][c] > 0 for c in COMPONENTS) and row["speedup_vs_dense"] > 0
    assert 0 < row["mask_iou_vs_dense"] <= 1
    # the VideoPredictor routes an SWR model by itself, with the same forced fraction
    predictor = next(r for r in records if r["accel"] == "swr" and r["loop"] == "predictor")
    assert predictor["error"] is None and predictor["accel_stats"]["swr_window_fraction"] == 0.5


def test_smoke_predictor_loop_tracks_the_same_masks(smoke_run):
    _, records = smoke_run
    row = next(r for r in records if r["loop"] == "predictor" and r["accel"] == "dense")
    assert row["error"] is None and row["accel"] == "dense"
    assert all(row["ms"][c] > 0 for c in COMPONENTS)
    assert row["ms"]["frame"] >= sum(row["ms"][c] for c in COMPONENTS)
    assert row["speedup_vs_dense"] == 1.0  # its own baseline: the dense row of the same loop
    # the VideoPredictor API and the benchmark's own loop segment identically (and not trivially)
    assert 0.01 < row["mask_fg_fraction"] < 0.99
    assert row["mask_iou_vs_dense"] > 0.99


def test_smoke_official_row_computes_what_our_dense_row_computes(smoke_run):
    _, records = smoke_run
    official = [r for r in records if r["accel"] == "official"]
    if not official:
        pytest.skip("the official sam2 package is not installed")
    row = official[0]
    assert row["error"] is None
    assert row["ms"]["image_encoder"] > 0 and row["ms"]["track_step"] > 0
    assert row["ms"]["memory_attention"] is None  # the official step is timed as one call
    assert row["speedup_vs_dense"] > 0
    assert 0.01 < row["mask_fg_fraction"] < 0.99
    assert row["mask_iou_vs_dense"] > 0.99  # same weights, same frames, same clicks -> same masks


def test_smoke_markdown_and_plot(smoke_run):
    paths, records = smoke_run
    text = paths["md"].read_text()
    assert "sam2.1_hiera_t" in text and "| dense |" in text and "Machine:" in text
    assert text.count("\n| sam2.1_hiera_t") == len(records)
    assert "swr" in text
    data = paths["png"].read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


@pytest.mark.parametrize("argv,message", [
    (["--model", "sam9_hiera_q"], "unknown model"),
    (["--accel", "dense,turbo"], "unknown acceleration"),
    (["--video", "/nonexistent/clip.mp4"], "video not found"),
    (["--image-size", "250"], "multiple of 32"),
    (["--frames", "2", "--warmup", "2"], "--warmup"),
    (["--checkpoint", "/nonexistent/ckpt.pt"], "checkpoint not found"),
    (["--loop", "turbo"], "unknown loop"),
    (["--json", "/nonexistent/folder/bench.json"], "does not exist"),
    (["--accel", "swr", "--swr-shortcut", "/nonexistent/shortcut.safetensors"], "SWR shortcut not found"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("effsam2 bench: error:") and message in err


def test_default_video_is_a_shared_clip(monkeypatch, shared_dir):
    monkeypatch.setenv("EFFSAM2_SHARED", str(shared_dir))
    assert default_video() == shared_dir / "data" / "videos" / "bedroom.mp4"


def test_checkpoints_map_to_models(tmp_path, capsys):
    import argparse

    from effsam2.cli import bench as bench_cli

    ckpt = tmp_path / "t.pt"
    ckpt.write_bytes(b"")  # only its existence is checked before the run
    parser = argparse.ArgumentParser()
    bench_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--model", "sam2.1_hiera_t", "--model", "sam2.1_hiera_s",
                              "--checkpoint", f"sam2.1_hiera_s={ckpt}"])
    options = bench_cli.options_from_args(args)
    assert options.checkpoints == {"sam2.1_hiera_s": str(ckpt)}
    assert options.models == ["sam2.1_hiera_t", "sam2.1_hiera_s"]
    # a bare path is ambiguous with two models; a checkpoint for a model not benchmarked is refused
    assert main(["bench", "--model", "sam2.1_hiera_t", "--model", "sam2.1_hiera_s", "--checkpoint", str(ckpt)]) == 2
    assert "MODEL=PATH" in capsys.readouterr().err
    assert main(["bench", "--checkpoint", f"sam2.1_hiera_l={ckpt}"]) == 2
    assert "not a benchmarked --model" in capsys.readouterr().err


def test_cuda_without_a_gpu_exits_2(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_swr_on_a_vit_model_is_unavailable_not_a_crash():
    from effsam2.accel.spec import AccelSpec
    from effsam2.bench.runner import AccelUnavailable, build_accel_model

    with pytest.raises(AccelUnavailable, match="swr unavailable for efficienttam_ti: .*Hiera trunks"):
        build_accel_model("efficienttam_ti", 256, AccelSpec.parse("swr"), {}, torch.device("cpu"))


def test_shortcut_of_another_model_exits_2_before_measuring(tmp_path, capsys):
    from effsam2.accel.shortcut import new_shortcut, save_shortcut
    from effsam2.registry import get_config

    config = get_config("sam2.1_hiera_b+")
    path = tmp_path / "bplus.safetensors"
    save_shortcut(new_shortcut(config), path, config)
    assert main(["bench", "--model", "sam2.1_hiera_t", "--accel", "swr", "--swr-shortcut", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained for sam2.1_hiera_b+" in err
