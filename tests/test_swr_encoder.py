"""SWR routed encoder: all windows == dense trunk, partial selections == an independent dense formulation,
gather/scatter round trips, and the routed span of every Hiera size."""

import pytest
import torch

from effsam2.accel.routed_hiera import (
    RoutedSpan,
    WindowGather,
    dense_trunk_from,
    routed_encode,
    routed_trunk,
    trunk_prefix,
    window_grid,
)
from effsam2.accel.shortcut import WindowShortcut, stage3_width
from effsam2.accel.window_routing import WindowGrid, WindowSelection
from effsam2.build import build_from_config, build_model
from effsam2.registry import get_config
from tests.helpers.frames import decode_frames, to_model_input

SIZE = 512  # stage-3 map 32x32: 14-windows padded to 42 -> 3x3 = 9 windows (3 of them partly padding)


@pytest.fixture(scope="module")
def frame(videos_dir):
    return to_model_input(decode_frames(videos_dir / "01_dog.mp4", 1, start=10)[0], SIZE)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("sam2.1_hiera_t", image_size=SIZE)


@pytest.mark.parametrize("name, first, merge", [
    ("sam2.1_hiera_t", 4, 9), ("sam2.1_hiera_s", 4, 13), ("sam2.1_hiera_b+", 6, 20), ("sam2.1_hiera_l", 9, 43),
])
def test_routed_span(name, first, merge):
    # stage 3 = the blocks after the second stage end; routing starts after its pooling block and ends
    # at its last global block (REFERENCE: b+ 6..20, l 9..43)
    with torch.device("meta"):
        model = build_from_config(get_config(name, SIZE))
    span = RoutedSpan.for_trunk(model.image_encoder.trunk)
    assert (span.first, span.merge) == (first, merge)


@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "sam2.1_hiera_b+"])
def test_all_windows_equal_dense(name, frame):
    torch.manual_seed(0)
    model = build_model(name, image_size=SIZE)
    trunk = model.image_encoder.trunk
    with torch.inference_mode():
        dense = trunk(frame)
        routed = routed_trunk(trunk, frame, WindowSelection.all(window_grid(model)), WindowShortcut(stage3_width(model.config)))
    for d, r in zip(dense, routed, strict=True):
        assert d.std() > 0.1  # a real feature map, not a constant
        assert torch.equal(d, r)  # bitwise: same kernels, same token order


def reference_routed_trunk(trunk, images, selected, grid, shortcut, first, merge):
    """The routed trunk written densely: windowed blocks run on the whole map (a window's result depends
    only on its own tokens), global blocks inside the span see only the selected windows' tokens, and at
    the merge the other windows take the shortcut of their values before the span."""
    keep = torch.zeros(grid.height, grid.width, dtype=torch.bool)
    for win in selected:
        r, c = divmod(win, grid.cols)
        keep[r * grid.window:(r + 1) * grid.window, c * grid.window:(c + 1) * grid.window] = True
    x = trunk.embed(images)
    outputs = []
    for i, block in enumerate(trunk.blocks):
        if i == first:
            before = x
        if first <= i < merge and block.spec.window_size == 0:
            x = x.clone()
            x[:, keep] = block(x[:, keep][:, None])[:, 0]
            continue
        if i == merge:
            x = torch.where(keep[..., None], x, shortcut(before))
        x = block(x)
        if i in trunk.stage_ends:
            outputs.append(x.permute(0, 3, 1, 2))
    return outputs


@pytest.fixture(scope="module")
def tiny_dense(tiny, frame):
    with torch.no_grad():
        return tiny.image_encoder.trunk(frame)


@pytest.mark.parametrize("selected", [[0, 4, 8], [2, 5, 6, 7, 8]])  # 2, 5, 8 and 6..8 reach into padding
def test_partial_selection_matches_dense_formulation(tiny, tiny_dense, frame, selected):
    grid = window_grid(tiny)
    assert grid.num_windows == 9
    trunk = tiny.image_encoder.trunk
    torch.manual_seed(1)
    shortcut = WindowShortcut(stage3_width(tiny.config)).eval()
    with torch.no_grad():
        shortcut.up_project.weight.normal_(std=0.05)  # far from the identity, so its use shows
        selection = WindowSelection.from_indices(grid, selected)
        routed = routed_trunk(trunk, frame, selection, shortcut)
        expected = reference_routed_trunk(trunk, frame, selected, grid, shortcut, 4, 9)
    dense = tiny_dense
    for r, e in zip(routed, expected, strict=True):
        torch.testing.assert_close(r, e, rtol=1e-4, atol=1e-4)
    # routing changed stage 3 and 4 (otherwise the comparison above proves nothing)
    assert (routed[2] - dense[2]).abs().max() > 0.1 and (routed[3] - dense[3]).abs().max() > 0.1
    torch.testing.assert_close(routed[1], dense[1], rtol=0, atol=0)  # stages before routing untouched
    with torch.no_grad():
        feats = routed_encode(tiny, frame, selection, shortcut)
        ref = tiny.features_from_encoder(tiny.image_encoder.neck_output(expected))
    torch.testing.assert_close(feats.vision_feats, ref.vision_feats, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats.high_res[0], ref.high_res[0], rtol=1e-4, atol=1e-4)
    assert feats.vision_feats.shape == (1, 256, 32, 32)


def test_untrained_shortcut_passes_background_through(tiny, frame):
    selection = WindowSelection.from_indices(window_grid(tiny), [4])
    trunk = tiny.image_encoder.trunk
    with torch.no_grad():
        identity = routed_trunk(trunk, frame, selection, None)
        expected = reference_routed_trunk(trunk, frame, [4], window_grid(tiny), lambda x: x, 4, 9)
    for r, e in zip(identity, expected, strict=True):
        torch.testing.assert_close(r, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("grid", [WindowGrid(32, 32, 14), WindowGrid(32, 32, 16), WindowGrid(20, 20, 7)])
def test_gather_scatter_round_trip(grid):
    torch.manual_seed(0)
    x = torch.randn(2, grid.height, grid.width, 5)
    for sel in ([0], list(range(grid.num_windows)), list(range(1, grid.num_windows, 2))):
        selection = WindowSelection.from_indices(grid, sel)
        gather = WindowGather(selection, x.device)
        fg, bg = gather.split(x)
        assert fg.shape == (2 * len(sel), grid.window, grid.window, 5)
        assert torch.equal(gather.join(fg, bg, 2), x)
        tokens = gather.gather_tokens(fg, 2)
        assert torch.equal(gather.scatter_tokens(fg, tokens, 2), fg)
        # the gathered tokens are exactly the map's tokens inside the selected windows, in raster order
        keep = torch.zeros(grid.height, grid.width, dtype=torch.bool)
        for win in sel:
            r, c = divmod(win, grid.cols)
            keep[r * grid.window:(r + 1) * grid.window, c * grid.window:(c + 1) * grid.window] = True
        assert torch.equal(tokens[:, 0], x[:, keep])
        # written-back tokens land where they came from
        fg2 = gather.scatter_tokens(fg, tokens + 1, 2)
        assert torch.equal(gather.join(fg2, bg, 2), torch.where(keep[..., None], x + 1, x))


def test_selection_must_fit_the_trunk(tiny, frame):
    with pytest.raises(ValueError, match="window"):
        routed_trunk(tiny.image_encoder.trunk, frame, WindowSelection.all(WindowGrid(32, 32, 16)))
    with pytest.raises(ValueError, match="image size"):
        routed_trunk(tiny.image_encoder.trunk, frame, WindowSelection.all(WindowGrid(64, 64, 14)))


def test_a_shared_prefix_gives_the_same_dense_and_routed_maps(tiny, frame):
    """Shortcut training runs the blocks before the routed span once for both encodings of a frame."""
    trunk = tiny.image_encoder.trunk
    selection = WindowSelection.from_indices(window_grid(tiny), [0, 4, 8])
    shortcut = WindowShortcut(stage3_width(tiny.config)).eval()  # no dropout: two runs must agree
    with torch.inference_mode():
        prefix = trunk_prefix(trunk, frame)
        dense, from_prefix = trunk(frame), dense_trunk_from(trunk, prefix)
        routed = routed_trunk(trunk, frame, selection, shortcut)
        routed_from_prefix = routed_trunk(trunk, None, selection, shortcut, prefix)
    assert len(prefix.outputs) == 2  # stages 1 and 2 end before the routed span
    assert not torch.equal(dense[2], routed[2])  # routing changed stage 3: the comparison below is not vacuous
    for d, p in zip(dense, from_prefix, strict=True):
        assert torch.equal(d, p)
    for r, p in zip(routed, routed_from_prefix, strict=True):
        assert torch.equal(r, p)
