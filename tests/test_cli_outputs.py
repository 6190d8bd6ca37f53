"""Output folders never mix runs, `track` output is what `eval` reads, and the command line's rough edges
(messages, negative coordinates, checks before work, SIGTERM), each through the CLI on real clips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import av
import pytest

from effsam2.cli import main

SIZE = "128"  # the default model at a reduced input size: fast, and real weights


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def tree(folder) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def track(video, out, *extra):
    return ["track", str(video), "--image-size", SIZE, "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def frame_folders(short_clip, tmp_path_factory):
    """The short clip as JPEG folders: ``good`` (10 frames) and ``broken`` (frame 4 truncated)."""
    root = tmp_path_factory.mktemp("frames")
    good, broken = root / "good", root / "broken"
    good.mkdir()
    with av.open(str(short_clip)) as video:
        for i, frame in enumerate(video.decode(video=0)):
            frame.to_image().save(good / f"{i:05d}.jpg", quality=90)
    shutil.copytree(good, broken)
    data = (broken / "00004.jpg").read_bytes()
    (broken / "00004.jpg").write_bytes(data[: len(data) // 3])
    return good, broken


def hidden_leftovers(folder):
    return [p.name for p in folder.iterdir() if "effsam2-" in p.name]


def test_a_second_run_never_mixes_with_the_first(short_clip, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(track(short_clip, out, "--point", "480,270", "--max-frames", "5"), capsys)
    assert code == 0, err
    first = tree(out)
    assert sorted(k for k in first if k.startswith("masks/")) == [f"masks/{i:05d}.png" for i in range(6)]

    code, _, err = run_cli(track(short_clip, out, "--point", "200,400", "--max-frames", "2"), capsys)
    assert code == 2 and "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert tree(out) == first

    code, _, err = run_cli(track(short_clip, out, "--point", "200,400", "--max-frames", "2", "--overwrite"), capsys)
    assert code == 0, err
    now = tree(out)
    assert sorted(now) == ["masks", "masks.json", "masks/00000.png", "masks/00001.png", "masks/00002.png",
                           "overlay.mp4"]
    doc = json.loads(now["masks.json"])
    assert sorted({a["frame_index"] for a in doc["annotations"]}) == [0, 1, 2]
    with av.open(str(out / "overlay.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 3
    assert hidden_leftovers(tmp_path) == []


def test_a_failing_run_leaves_the_previous_result_untouched(frame_folders, tmp_path, capsys):
    good, broken = frame_folders
    out = tmp_path / "out"
    code, _, err = run_cli(track(good, out, "--point", "480,270"), capsys)
    assert code == 0, err
    before = tree(out)
    assert len([k for k in before if k.startswith("masks/")]) == 10
    code, _, err = run_cli(track(broken, out, "--point", "300,300", "--overwrite"), capsys)
    assert code == 2 and "00004.jpg" in err and len(err.strip().splitlines()) == 1, err
    assert tree(out) == before
    assert hidden_leftovers(tmp_path) == []


def test_a_failing_first_run_leaves_nothing(frame_folders, tmp_path, capsys):
    _, broken = frame_folders
    out = tmp_path / "new" / "out"
    code, _, err = run_cli(track(broken, out, "--point", "300,300"), capsys)
    assert code == 2, err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def davis_subset(davis_dir, tmp_path):
    """cows's first 6 frames as a DAVIS dataset of its own."""
    root = tmp_path / "davis"
    for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
        folder = root / kind / "480p" / "cows"
        folder.mkdir(parents=True)
        for i in range(6):
            shutil.copy(davis_dir / kind / "480p" / "cows" / f"{i:05d}{suffix}", folder)
    return root


def test_eval_reads_what_track_writes(davis_subset, tmp_path, capsys):
    frames = davis_subset / "JPEGImages" / "480p" / "cows"
    gt = davis_subset / "Annotations" / "480p" / "cows" / "00000.png"
    e2e = tmp_path / "e2e"
    code, _, err = run_cli(["track", str(frames), "--out", str(e2e / "cows"), "--mask", str(gt),
                            "--format", "png", "--no-progress"], capsys)  # the model's own input size
    assert code == 0, err
    code, out, err = run_cli(["eval", "--dataset", str(davis_subset), "--predictions", str(e2e),
                              "--sequences", "cows", "--json", str(tmp_path / "summary.json")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_sequences"] == 1 and summary["num_scored"] == 4  # frames 1-4 (first and last dropped)
    assert summary["global"]["J"] > 0.5  # real weights on real frames
    assert "cows" in out


def test_eval_names_the_expected_layout(davis_subset, tmp_path, capsys):
    pred = tmp_path / "pred" / "cows" / "foo"
    pred.mkdir(parents=True)
    code, _, err = run_cli(["eval", "--dataset", str(davis_subset), "--predictions", str(tmp_path / "pred")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "masks/<frame>.png (an effsam2 track result)" in err and "found a folder named 'foo'" in err


def test_eval_out_is_replaced_whole_or_not_at_all(davis_subset, tmp_path, capsys):
    out = tmp_path / "eval_out"
    base = ["eval", "--dataset", str(davis_subset), "--model", "default", "--image-size", SIZE, "--out", str(out)]
    code, _, err = run_cli(base, capsys)
    assert code == 0, err
    first = tree(out)
    assert {"results.json", "results.csv", "results.md", "predictions/cows/00005.png"} <= set(first)
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "not empty" in err
    code, _, err = run_cli(base + ["--overwrite", "--sequences", "nope"], capsys)
    assert code == 2 and tree(out) == first
    assert hidden_leftovers(tmp_path) == []


def _evil_checkpoint(path, marker):
    import torch

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the marker file if unpickled

    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, path)


def test_checkpoint_messages_are_whole_and_say_what_happened(short_clip, tmp_path, capsys):
    evil, marker = tmp_path / "evil.pt", tmp_path / "executed"
    _evil_checkpoint(evil, marker)
    args = ["track", str(short_clip), "--model", "sam2.1_hiera_t", "--checkpoint", str(evil), "--image-size",
            "256", "--out", str(tmp_path / "o"), "--point", "10,10", "--no-progress"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a weights-only checkpoint" in err and "nothing in it was executed" in err
    assert not marker.exists()
    truncated = tmp_path / "sam2.1_hiera_tiny.pt"
    truncated.write_bytes(evil.read_bytes()[:200])
    args[args.index(str(evil))] = str(truncated)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "truncated or corrupt" in err and err.strip().endswith("download it again"), err
    assert not (tmp_path / "o").exists()


def test_track_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["track", "--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "Segment and track prompted objects" in out


@pytest.mark.parametrize("option,value", [("--point", "-5,250"), ("--box", "-5,-5,100,100")])
def test_negative_coordinates_reach_the_frame_check(option, value, short_clip, tmp_path, capsys):
    code, _, err = run_cli(track(short_clip, tmp_path / "o", option, value), capsys)
    assert code == 2 and "is outside the 960x540 frame" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_fails_before_the_model_is_built(short_clip, tmp_path, capsys, monkeypatch):
    import effsam2.cli.track as track_cli

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before --out was checked")

    monkeypatch.setattr(track_cli, "build_model_from_args", no_build)
    target = tmp_path / "result"
    target.write_text("not a folder")
    code, _, err = run_cli(track(short_clip, target, "--point", "10,10"), capsys)
    assert code == 2 and "not a folder" in err
    assert target.read_text() == "not a folder"


def test_sigterm_cleans_up_like_ctrl_c(videos_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "effsam2.cli", "track", str(videos_dir / "bedroom.mp4"), "--point", "480,270",
           "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            staged = [p for p in tmp_path.glob(".out.effsam2-partial-*/masks/*.png")]
            if len(staged) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["effsam2 track: terminated (SIGTERM)"]
    assert list(tmp_path.iterdir()) == []
    assert os.path.exists(videos_dir / "bedroom.mp4")


def test_bench_outputs_are_written_together_or_not_at_all(tmp_path):
    from effsam2.cli.bench import write_together

    old = {"a.json": b"old json", "a.md": b"old table"}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)

    def good(records, path):
        path.write_text(f"new {records}")

    def failing(records, path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_together("rows", [(tmp_path / "a.json", good), (tmp_path / "a.md", failing)])
    assert tree(tmp_path) == old  # neither file replaced, no temporary file left
    write_together("rows", [(tmp_path / "a.json", good), (tmp_path / "a.md", good)])
    assert tree(tmp_path) == {"a.json": b"new rows", "a.md": b"new rows"}
