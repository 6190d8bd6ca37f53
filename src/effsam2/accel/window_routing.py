"""Sparse Window Routing (SWR), part 1: which stage-3 windows of the next frame run the full trunk.

Efficient-SAM2 (ICLR 2026) routes windows of the Hiera stage-3 map (stride 16, the map the tracker works
on) from the previous frame's outputs. Facts taken from the official implementation
(``jingjing0419/Efficient-SAM2``), which this module re-implements as pure functions of explicit data:

* Mask windows: every object's low-res mask logits (all multimask candidates, at 4x the stage-3
  resolution) are thresholded at 0, OR-ed over objects and candidates, dilated by a stride-1 max-pool
  (kernel 5), and every window whose footprint (``4 * window`` mask pixels square, on the bottom/right
  zero-padded grid) holds a foreground pixel is selected.
* Saliency fallback: when no window is selected or any object's score logit is below 5, windows are
  added from the mask decoder's token-to-image attention. For each object the softmax weights of the
  three token->image attentions (two transformer layers and the final one) are averaged over heads and
  over *all* query tokens (object-score, IoU, mask and prompt tokens), then over the three maps; the
  result (a distribution over the h*w tokens) is summed per window, and windows are taken in decreasing
  order of mass up to and including the one at which the cumulative mass reaches the threshold (0.7 at
  inference). The union over objects is added to the mask windows.
* A frame without a usable previous frame (the first frame of a propagation, a prompted frame, the
  first frame after a reset) runs all windows.

Where this module departs from the official code, on purpose: the frame right after a prompted frame is
routed from the prompt's outputs (the official propagation loop runs it densely too because it has no
routing record for frames it did not compute), and a needed saliency fallback without attention weights
(e.g. the previous frame was a mask prompt) selects all windows instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from effsam2.configs import HieraConfig, ModelConfig
from effsam2.errors import ConfigError

STAGE = 2  # routing happens in the third Hiera stage (0-based index 2), the stride-16 map


def supports_window_routing(config: ModelConfig) -> bool:
    """Whether SWR can run on a model: routing is defined on the windows of a Hiera trunk's stage 3."""
    return isinstance(config.trunk, HieraConfig)


@dataclass(frozen=True)
class WindowGrid:
    """The stage-3 window layout: an (height, width) token map cut into ``window``-sized squares.

    Windows are numbered row-major over the map padded (bottom/right) to a multiple of ``window``, exactly
    as ``modeling.windows.window_partition`` orders them. b+ at 1024: 64x64 map, window 14 -> 5x5 = 25
    windows; l at 1024: window 16 -> 4x4 = 16; b+ at 512: 32x32 -> 3x3 = 9.
    """

    height: int
    width: int
    window: int

    @classmethod
    def for_config(cls, config: ModelConfig) -> WindowGrid:
        trunk = config.trunk
        if not supports_window_routing(config):
            raise ConfigError(f"sparse window routing (swr) applies to Hiera trunks (sam2 / sam2.1 models) only; "
                              f"{config.name} has no Hiera trunk")
        # patch embedding (stride 4) then one 2x query pooling per stage change -> stride 16 at stage 3
        stride = 4 * 2**STAGE
        return cls(config.image_size // stride, config.image_size // stride, trunk.window_spec[STAGE])

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.window)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.window)

    @property
    def num_windows(self) -> int:
        return self.rows * self.cols

    @property
    def padded(self) -> tuple[int, int]:
        return self.rows * self.window, self.cols * self.window

    def window_sums(self, values: torch.Tensor) -> torch.Tensor:
        """(B, height * s, width * s) per-pixel values at ``s`` times the map resolution -> (B, windows) sums."""
        b, h, w = values.shape
        scale = h // self.height
        if h != self.height * scale or w != self.width * scale or scale < 1:
            raise ValueError(f"a {h}x{w} map is not an integer multiple of the {self.height}x{self.width} grid")
        side = self.window * scale
        padded = F.pad(values, (0, self.cols * side - w, 0, self.rows * side - h))
        blocks = padded.reshape(b, self.rows, side, self.cols, side)
        return blocks.sum(dim=(2, 4)).reshape(b, self.num_windows)


@dataclass(frozen=True)
class WindowSelection:
    """The windows one frame runs through the full stage-3 blocks.

    ``selected`` is a (num_windows,) bool CPU tensor in the grid's row-major window order; ``reason`` says
    which rule produced it ("all", "mask", "mask+saliency", "fraction", ...) for logs and benchmarks.
    """

    grid: WindowGrid
    selected: torch.Tensor
    reason: str = ""

    def __post_init__(self) -> None:
        if self.selected.dtype != torch.bool or self.selected.shape != (self.grid.num_windows,):
            raise ValueError(f"selection must be a ({self.grid.num_windows},) bool tensor, got "
                             f"{self.selected.dtype} {tuple(self.selected.shape)}")
        if not bool(self.selected.any()):
            raise ValueError("a window selection must keep at least one window")

    @classmethod
    def all(cls, grid: WindowGrid, reason: str = "all") -> WindowSelection:
        return cls(grid, torch.ones(grid.num_windows, dtype=torch.bool), reason)

    @classmethod
    def from_indices(cls, grid: WindowGrid, indices: Iterable[int], reason: str = "indices") -> WindowSelection:
        selected = torch.zeros(grid.num_windows, dtype=torch.bool)
        selected[torch.as_tensor(list(indices), dtype=torch.long)] = True
        return cls(grid, selected, reason)

    @classmethod
    def centered_fraction(cls, grid: WindowGrid, fraction: float) -> WindowSelection:
        """round(fraction * windows) windows (at least one) closest to the map centre (for benchmarks)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"window fraction must be in (0, 1], got {fraction}")
        count = max(1, round(fraction * grid.num_windows))
        w = grid.window
        idx = torch.arange(grid.num_windows)
        # centre of each window's valid part, so a clipped border window counts where its tokens are
        cy = ((idx // grid.cols) * w + torch.clamp(grid.height - (idx // grid.cols) * w, max=w) / 2)
        cx = ((idx % grid.cols) * w + torch.clamp(grid.width - (idx % grid.cols) * w, max=w) / 2)
        dist = (cy - grid.height / 2) ** 2 + (cx - grid.width / 2) ** 2
        order = torch.argsort(dist, stable=True)  # ties: lower window index first
        return cls.from_indices(grid, order[:count].tolist(), reason=f"fraction {fraction:g}")

    @property
    def indices(self) -> torch.Tensor:
        """(count,) int64 indices of the selected windows, increasing."""
        return torch.nonzero(self.selected).flatten()

    @property
    def count(self) -> int:
        return int(self.selected.sum())

    @property
    def fraction(self) -> float:
        return self.count / self.grid.num_windows

    @property
    def is_full(self) -> bool:
        return bool(self.selected.all())


@dataclass(frozen=True)
class RouterConfig:
    """Router settings (official inference defaults)."""

    dilation: int = 5  # max-pool kernel applied to the foreground at mask resolution (1 = none)
    score_threshold: float = 5.0  # any object scoring below this adds saliency windows
    saliency_mass: float = 0.7  # cumulative token->image attention mass to cover per object

    def __post_init__(self) -> None:
        if self.dilation < 1 or self.dilation % 2 == 0:
            raise ValueError(f"dilation must be a positive odd kernel size, got {self.dilation}")
        if not 0.0 < self.saliency_mass <= 1.0:
            raise ValueError(f"saliency mass must be in (0, 1], got {self.saliency_mass}")


DEFAULT_ROUTER = RouterConfig()


@dataclass
class RouterEvidence:
    """What the router reads from one frame's outputs, all objects together.

    masks: (N, 4h, 4w) mask logits, every object's candidates stacked (N = objects x candidates).
    scores: (B,) object score logits. saliency: (B, h*w) per-object token->image attention (each row a
    distribution), or None when some object's output carries no attention weights.
    """

    masks: torch.Tensor
    scores: torch.Tensor
    saliency: torch.Tensor | None

    @classmethod
    def from_outputs(cls, outputs: Iterable) -> RouterEvidence:
        """Gather evidence from the frame's per-object outputs.

        Each item is a ``tracker.StepOutput`` or ``sam2_model.HeadOutput`` (all multimask candidates and,
        when decoded with ``return_token_attention=True``, the attention), or a ``memory.MemoryEntry`` (the
        chosen mask only, e.g. a stored prompt output).
        """
        masks, scores, saliency = [], [], []
        for out in outputs:
            heads = getattr(out, "heads", out)  # StepOutput -> its HeadOutput
            if hasattr(heads, "low_res_multimasks"):
                masks.append(heads.low_res_multimasks.detach().flatten(0, 1))
                attention = heads.token_attention
            else:  # MemoryEntry
                masks.append(heads.pred_masks.detach().flatten(0, 1))
                attention = None
            scores.append(heads.object_score_logits.detach().flatten())
            saliency.append(None if not attention else token_saliency(attention))
        if not masks:
            raise ValueError("no outputs to route from")
        sal = None if any(s is None for s in saliency) else torch.cat(saliency)
        return cls(torch.cat([m.float() for m in masks]), torch.cat(scores).float(), sal)


def token_saliency(attention: list[torch.Tensor]) -> torch.Tensor:
    """Decoder token->image weights [(B, heads, N_tokens, h*w)] -> (B, h*w): mean over heads, tokens, maps."""
    return torch.stack([a.detach().float().mean(dim=(1, 2)) for a in attention]).mean(dim=0)


def mask_windows(grid: WindowGrid, masks: torch.Tensor, dilation: int = 5) -> torch.Tensor:
    """(N, 4h, 4w) mask logits -> (num_windows,) bool: windows touching the dilated union of foregrounds."""
    foreground = (masks > 0).any(dim=0, keepdim=True).float()[None]  # (1, 1, 4h, 4w)
    if dilation > 1:
        foreground = F.max_pool2d(foreground, dilation, stride=1, padding=dilation // 2)
    return grid.window_sums(foreground[0]).cpu()[0] > 0


def saliency_windows(grid: WindowGrid, saliency: torch.Tensor, mass: float = 0.7) -> torch.Tensor:
    """(B, h*w) per-object attention -> (num_windows,) bool: per object, the fewest highest-mass windows
    whose cumulative mass reaches ``mass`` (all windows when it never does), united over objects."""
    per_window = grid.window_sums(saliency.float().reshape(-1, grid.height, grid.width)).cpu()  # (B, windows)
    ordered, order = torch.sort(per_window, dim=1, descending=True, stable=True)
    reached = torch.cumsum(ordered, dim=1) >= mass
    # windows up to and including the first one at which the mass is reached
    count = torch.where(reached.any(dim=1), reached.float().argmax(dim=1) + 1, grid.num_windows)
    keep_sorted = torch.arange(grid.num_windows)[None] < count[:, None]
    selected = torch.zeros_like(per_window, dtype=torch.bool)
    selected.scatter_(1, order, keep_sorted)
    return selected.any(dim=0)


def route_windows(grid: WindowGrid, evidence: RouterEvidence | None,
                  config: RouterConfig = DEFAULT_ROUTER) -> WindowSelection:
    """The windows the next frame runs, from the previous frame's evidence (None: all windows)."""
    if evidence is None:
        return WindowSelection.all(grid, "no previous frame")
    selected = mask_windows(grid, evidence.masks, config.dilation)
    low_score = bool((evidence.scores < config.score_threshold).any())
    if not selected.any() or low_score:
        if evidence.saliency is None:
            return WindowSelection.all(grid, "saliency needed but no attention")
        reason = "mask+saliency" if selected.any() else "saliency"
        selected = selected | saliency_windows(grid, evidence.saliency, config.saliency_mass)
    else:
        reason = "mask"
    return WindowSelection(grid, selected, reason)


@dataclass
class RouterState:
    """Per-session routing record for a predictor: the evidence of the last processed frame.

    Usage per frame of a propagation (in processing order)::

        selection = router.next_selection(grid, prompted=frame_has_new_prompt)
        feats = routed_encode(model, image, selection, shortcut)
        ... track every object on the frame (decoder with return_token_attention=True) ...
        router.observe(step_outputs_of_all_objects_on_this_frame)

    Call ``reset()`` at the start of every propagation and on ``reset_state`` so the first frame runs
    all windows. ``fraction`` (benchmarks) replaces the router by a fixed centred fraction of windows.
    """

    config: RouterConfig = DEFAULT_ROUTER
    fraction: float | None = None
    evidence: RouterEvidence | None = None

    def reset(self) -> None:
        self.evidence = None

    def observe(self, outputs: Iterable) -> None:
        self.evidence = RouterEvidence.from_outputs(outputs)

    def next_selection(self, grid: WindowGrid, *, prompted: bool = False) -> WindowSelection:
        if prompted:
            return WindowSelection.all(grid, "prompted frame")
        if self.evidence is None:
            return WindowSelection.all(grid, "no previous frame")
        if self.fraction is not None:
            return WindowSelection.centered_fraction(grid, self.fraction)
        return route_windows(grid, self.evidence, self.config)
