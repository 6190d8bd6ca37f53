"""SWR router: window grids, mask windows (dilation, candidates, objects), saliency fallback, session rules.

Expected window sets are worked out by hand in the comments from the geometry: the b+ grid at 1024 is a
64x64 stage-3 map cut into 14x14 windows (padded to 70 -> 5x5 = 25 windows); masks are at 4x that
resolution (256x256), so one window spans 56 mask pixels.
"""

from dataclasses import replace

import pytest
import torch

from effsam2.accel.window_routing import (
    RouterConfig,
    RouterEvidence,
    RouterState,
    WindowGrid,
    WindowSelection,
    mask_windows,
    route_windows,
    saliency_windows,
    token_saliency,
)
from effsam2.configs import ViTConfig
from effsam2.errors import ConfigError
from effsam2.modeling.memory import MemoryEntry
from effsam2.modeling.sam2_model import HeadOutput
from effsam2.registry import get_config

GRID = WindowGrid(64, 64, 14)


@pytest.mark.parametrize("name, size, windows, grid", [
    ("sam2.1_hiera_b+", 1024, 25, (64, 14)),  # 64 -> 70 padded: 5 x 5
    ("sam2.1_hiera_l", 1024, 16, (64, 16)),  # 64 = 4 x 16, no padding
    ("sam2.1_hiera_t", 1024, 25, (64, 14)),
    ("sam2.1_hiera_s", 512, 9, (32, 14)),  # 32 -> 42: 3 x 3
    ("sam2_hiera_l", 512, 4, (32, 16)),
    ("sam2.1_hiera_b+", 256, 4, (16, 14)),  # 16 -> 28: 2 x 2
])
def test_grid_from_config(name, size, windows, grid):
    g = WindowGrid.for_config(get_config(name, size))
    assert (g.height, g.window) == grid and g.width == g.height
    assert g.num_windows == windows


def test_grid_rejects_vit_models():
    vit = replace(get_config("sam2.1_hiera_t"), trunk=ViTConfig(192, 3))
    with pytest.raises(ConfigError, match="Hiera"):
        WindowGrid.for_config(vit)


def logits(*boxes, size=256):
    """(size, size) mask logits: -3 everywhere, +3 inside each (y0, y1, x0, x1) box (inclusive)."""
    m = torch.full((size, size), -3.0)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1 + 1, x0:x1 + 1] = 3.0
    return m


def heads(masks, score=10.0, attention=None):
    """A HeadOutput for one object with (M, 256, 256) candidate masks."""
    low = masks[None]
    return HeadOutput(low, low, torch.ones(1, masks.shape[0]), low[:, :1], low[:, :1], torch.zeros(1, 256),
                      torch.tensor([[score]]), attention)


def windows(selection):
    return set(torch.nonzero(selection).flatten().tolist())


def test_mask_windows_by_hand():
    # rows 50..53 and cols 100..110; dilated by 2 -> rows 48..55 (window row 0), cols 98..112 (cols 1, 2)
    assert windows(mask_windows(GRID, logits((50, 53, 100, 110))[None])) == {1, 2}
    # one pixel at (54, 54): alone it lies in window 0; dilated to 52..56 it reaches row/col 56 = window 1
    pixel = logits((54, 54, 54, 54))[None]
    assert windows(mask_windows(GRID, pixel, dilation=1)) == {0}
    assert windows(mask_windows(GRID, pixel, dilation=5)) == {0, 1, 5, 6}
    assert windows(mask_windows(GRID, pixel, dilation=3)) == {0}  # 53..55 stays inside window 0
    # bottom-right corner pixel: window (4, 4) = 24, the padded one; dilation is clipped at the border
    assert windows(mask_windows(GRID, logits((255, 255, 255, 255))[None])) == {24}
    # a whole window row: mask rows 112..167 are window row 2 exactly; dilation spills into rows 1 and 3
    assert windows(mask_windows(GRID, logits((114, 165, 0, 255))[None])) == set(range(10, 15))
    assert windows(mask_windows(GRID, logits((112, 167, 0, 255))[None])) == set(range(5, 20))
    assert not mask_windows(GRID, logits()[None]).any()


def test_every_candidate_and_every_object_counts():
    a = torch.stack([logits(), logits(), logits((10, 12, 10, 12))])  # only candidate 3 has foreground
    b = torch.stack([logits((200, 202, 200, 202)), logits(), logits()])
    evidence = RouterEvidence.from_outputs([heads(a), heads(b)])
    assert evidence.masks.shape == (6, 256, 256)
    sel = route_windows(GRID, evidence)
    assert windows(sel.selected) == {0, 18}  # (10..12) -> window 0; (200..202) -> row 3, col 3 = 18
    assert sel.reason == "mask"
    only_a = route_windows(GRID, RouterEvidence.from_outputs([heads(a)]))
    only_b = route_windows(GRID, RouterEvidence.from_outputs([heads(b)]))
    assert torch.equal(sel.selected, only_a.selected | only_b.selected)


def attention_on(window_mass: dict[int, float], heads_=2, tokens=7, grid=GRID):
    """(1, heads, tokens, h*w) weights putting the given mass uniformly on each window's real tokens."""
    amap = torch.zeros(grid.height, grid.width)
    for win, mass in window_mass.items():
        r, c = divmod(win, grid.cols)
        y0, x0 = r * grid.window, c * grid.window
        block = amap[y0:y0 + grid.window, x0:x0 + grid.window]
        block += mass / block.numel()
    return amap.flatten().expand(1, heads_, tokens, -1).clone()


def test_saliency_cumulative_mass_by_hand():
    att = attention_on({12: 0.5, 3: 0.3, 20: 0.2})
    sal = token_saliency([att, att, att])
    assert windows(saliency_windows(GRID, sal, 0.7)) == {12, 3}  # 0.5, 0.8 >= 0.7
    assert windows(saliency_windows(GRID, sal, 0.5)) == {12}  # reached exactly at the first window
    assert windows(saliency_windows(GRID, sal, 0.81)) == {12, 3, 20}


def test_saliency_averages_heads_tokens_and_layers():
    # head 0 looks at window 7, head 1 at window 8: averaged, each holds half the mass
    two_heads = torch.cat([attention_on({7: 1.0}, heads_=1), attention_on({8: 1.0}, heads_=1)], dim=1)
    assert windows(saliency_windows(GRID, token_saliency([two_heads] * 3), 0.7)) == {7, 8}
    # tokens: 3 of 4 tokens look at window 1, one at window 2 -> 0.75 / 0.25
    tok = torch.cat([attention_on({1: 1.0}, tokens=3), attention_on({2: 1.0}, tokens=1)], dim=2)
    assert windows(saliency_windows(GRID, token_saliency([tok] * 3), 0.7)) == {1}
    # layers: two maps on window 5, the final one on window 6 -> 2/3 vs 1/3
    layers = [attention_on({5: 1.0}), attention_on({5: 1.0}), attention_on({6: 1.0})]
    assert windows(saliency_windows(GRID, token_saliency(layers), 0.6)) == {5}
    assert windows(saliency_windows(GRID, token_saliency(layers), 0.7)) == {5, 6}


def test_saliency_is_per_object_then_united():
    a = attention_on({0: 0.9, 1: 0.1})
    b = attention_on({24: 0.6, 23: 0.4})
    sal = torch.cat([token_saliency([a] * 3), token_saliency([b] * 3)])
    assert windows(saliency_windows(GRID, sal, 0.7)) == {0, 24, 23}


def test_low_score_adds_saliency_windows():
    att = [attention_on({12: 0.5, 3: 0.3, 20: 0.2})] * 3
    mask = torch.stack([logits((10, 12, 10, 12))] * 3)
    confident = RouterEvidence.from_outputs([heads(mask, 10.0, att)])
    assert windows(route_windows(GRID, confident).selected) == {0}
    unsure = RouterEvidence.from_outputs([heads(mask, 4.9, att)])
    sel = route_windows(GRID, unsure)
    assert windows(sel.selected) == {0, 12, 3} and sel.reason == "mask+saliency"
    # one unsure object among several is enough; threshold is configurable
    two = RouterEvidence.from_outputs([heads(mask, 10.0, att), heads(mask, 4.0, att)])
    assert windows(route_windows(GRID, two).selected) == {0, 12, 3}
    assert windows(route_windows(GRID, unsure, RouterConfig(score_threshold=3.0)).selected) == {0}


def test_no_foreground_uses_saliency_and_no_attention_runs_all():
    att = [attention_on({7: 1.0})] * 3
    empty = torch.stack([logits()] * 3)
    sel = route_windows(GRID, RouterEvidence.from_outputs([heads(empty, 10.0, att)]))
    assert windows(sel.selected) == {7} and sel.reason == "saliency"
    # a stored prompt output (MemoryEntry) has neither candidates nor attention
    entry = MemoryEntry(pred_masks=logits()[None, None], obj_ptr=torch.zeros(1, 256),
                        object_score_logits=torch.tensor([[-10.0]]))
    sel = route_windows(GRID, RouterEvidence.from_outputs([entry]))
    assert sel.is_full and "no attention" in sel.reason
    confident_entry = MemoryEntry(pred_masks=logits((54, 55, 54, 55))[None, None], obj_ptr=torch.zeros(1, 256),
                                  object_score_logits=torch.tensor([[10.0]]))
    assert windows(route_windows(GRID, RouterEvidence.from_outputs([confident_entry])).selected) == {0, 1, 5, 6}


def test_session_rules():
    router = RouterState()
    assert router.next_selection(GRID).is_full  # first frame
    router.observe([heads(torch.stack([logits((10, 12, 10, 12))] * 3))])
    assert windows(router.next_selection(GRID).selected) == {0}
    assert router.next_selection(GRID, prompted=True).is_full
    router.reset()
    assert router.next_selection(GRID).is_full
    bench = RouterState(fraction=0.25)
    bench.observe([heads(torch.stack([logits()] * 3))])
    sel = bench.next_selection(GRID)
    assert sel.count == 6 and 12 in windows(sel.selected)  # round(0.25 * 25) windows around the centre


def test_selection_validation_and_centred_fraction():
    with pytest.raises(ValueError, match="at least one"):
        WindowSelection(GRID, torch.zeros(25, dtype=torch.bool))
    with pytest.raises(ValueError):
        WindowSelection(GRID, torch.ones(16, dtype=torch.bool))
    assert WindowSelection.centered_fraction(GRID, 0.01).count == 1
    assert windows(WindowSelection.centered_fraction(GRID, 0.01).selected) == {12}
    # the 4 windows around the centre of a 4x4 grid without padding
    assert windows(WindowSelection.centered_fraction(WindowGrid(64, 64, 16), 0.25).selected) == {5, 6, 9, 10}
    assert WindowSelection.centered_fraction(GRID, 1.0).is_full
    sel = WindowSelection.from_indices(GRID, [3, 1])
    assert sel.indices.tolist() == [1, 3] and sel.fraction == pytest.approx(2 / 25)
