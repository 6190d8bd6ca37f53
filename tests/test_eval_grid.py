"""`effsam2 eval --accel a,b,c`: one row per configuration on the same data, the dense row equal to a plain
run; acceleration settings and SMR policies written in the spec are the ones the model runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import effsam2
from effsam2.accel.smr_policy import RandomSelection, TopKSaliency, UniformSelection
from effsam2.accel.spec import AccelSpec
from effsam2.cli import build_parser, main
from effsam2.cli.model_args import build_model_from_args
from effsam2.errors import Effsam2Error

SIZE = "128"
SEQUENCES = ("blackswan", "cows")


@pytest.fixture(scope="module")
def davis_pair(davis_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("davis_pair")
    for name in SEQUENCES:
        for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
            folder = root / kind / "480p" / name
            folder.mkdir(parents=True)
            for i in range(5):
                shutil.copy(davis_dir / kind / "480p" / name / f"{i:05d}{suffix}", folder)
    return root


def test_grid_has_one_row_per_configuration_and_dense_matches_a_plain_run(davis_pair, tmp_path, capsys):
    base = ["eval", "--dataset", str(davis_pair), "--model", "default", "--image-size", SIZE]
    code = main(base + ["--accel", "pool@4,smr@0.9:random,pool@4", "--out", str(tmp_path / "grid")])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = json.loads((tmp_path / "grid" / "grid.json").read_text())["rows"]
    assert [r["accel"] for r in rows] == ["dense", "pool@4", "smr@0.9:random"]  # dense added first, no repeats
    assert rows[0]["delta_jf"] == 0 and rows[0]["speedup"] == 1
    for r in rows:
        assert 0 < r["jf"] <= 1 and r["frames"] == 10
        assert r["delta_jf"] == pytest.approx(r["jf"] - rows[0]["jf"])
    for folder in ("dense", "pool_4", "smr_0.9-random"):
        assert (tmp_path / "grid" / folder / "results.json").is_file()
        assert len(list((tmp_path / "grid" / folder / "predictions" / "cows").glob("*.png"))) == 5
    assert (tmp_path / "grid" / "grid.png").stat().st_size > 0 and "| pool@4 |" in out
    assert "| sequence | dense | pool@4 | smr@0.9:random |" in out and "| cows |" in out

    code = main(base + ["--accel", "dense", "--out", str(tmp_path / "plain"), "--json", str(tmp_path / "p.json")])
    assert code == 0, capsys.readouterr().err
    plain = json.loads((tmp_path / "p.json").read_text())["global"]
    assert rows[0]["jf"] == plain["J&F"] and rows[0]["j"] == plain["J"]


def test_a_bad_entry_fails_before_anything_runs(davis_pair, tmp_path, capsys):
    code = main(["eval", "--dataset", str(davis_pair), "--model", "default", "--accel", "pool,smr@2",
                 "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 2 and "SMR sparsity must be in [0, 1)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()


def test_spec_settings_round_trip_and_override_keywords():
    spec = AccelSpec.parse("pool@4+smr@0.8:uniform", pool_window=2, smr_sparsity=0.95, smr_policy="topk")
    assert (spec.pool, spec.pool_window, spec.smr, spec.smr_sparsity, spec.smr_policy) == ("exact", 4, True, 0.8,
                                                                                           "uniform")
    assert AccelSpec.parse(spec.description) == spec
    assert spec.short_label == "pool@4+smr@0.8:uniform" and AccelSpec.parse("pool+smr").short_label == "pool+smr"
    for bad in ("pool@3", "dense@1", "pool:random", "smr:best", "smr@x"):
        with pytest.raises(Effsam2Error):
            AccelSpec.parse(bad)


def _kept_tokens(model, davis_dir) -> torch.Tensor:
    """token_index of frame 1's memory after it was recalled (tracked 4 frames of cows)."""
    frames_dir = davis_dir / "JPEGImages" / "480p" / "cows"
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(frames_dir.glob("*.jpg"))[:4]]
    gt = np.asarray(Image.open(davis_dir / "Annotations" / "480p" / "cows" / "00000.png")) > 0
    predictor = effsam2.VideoPredictor(model)
    state = predictor.init_state(frames)
    predictor.add_new_mask(state, 0, 1, gt)
    for _ in predictor.propagate_in_video(state):
        pass
    return next(iter(state.objects.values())).memory.non_cond[1].token_index


@pytest.mark.parametrize("policy,cls", [("topk", TopKSaliency), ("random", RandomSelection),
                                        ("uniform", UniformSelection)])
def test_the_smr_policy_of_the_command_line_is_the_one_used(policy, cls, davis_dir):
    args = build_parser().parse_args(["eval", "--dataset", str(davis_dir), "--model", "default", "--image-size",
                                      SIZE, "--accel", f"smr@0.9:{policy}", "--out", "unused"])
    model = build_model_from_args(args, "eval")
    backend = model.memory_attention.backend
    assert type(backend.policy) is cls and backend.policy.sparsity == 0.9
    kept = _kept_tokens(model, davis_dir)
    grid = (int(SIZE) // 16) ** 2
    k = int((1 - 0.9) * grid)
    uniform = torch.linspace(0, grid - 1, k, dtype=torch.float64).round().long()
    assert kept is not None and len(kept) >= k  # the frame was pruned to its kept tokens
    if policy == "uniform":
        assert torch.equal(kept.cpu(), uniform)  # every layer keeps the evenly spaced tokens
    else:
        assert not torch.equal(kept.cpu(), uniform)
    if policy == "random":  # not the saliency top-k: the same run with topk keeps other tokens
        topk_args = build_parser().parse_args(["eval", "--dataset", str(davis_dir), "--model", "default",
                                               "--image-size", SIZE, "--accel", "smr@0.9", "--out", "unused"])
        assert not torch.equal(kept, _kept_tokens(build_model_from_args(topk_args, "eval"), davis_dir))
