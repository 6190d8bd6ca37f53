"""Sparse Window Routing (SWR), part 2: the Hiera trunk with stage 3 computed on selected windows only.

Facts from the official Efficient-SAM2 implementation that this module follows:

* Routing covers Hiera stage 3 from the block after its query-pooling block up to the last global
  block of the stage (b+: blocks 6..20, l: 9..43, t: 4..9, s: 4..13). The pooling block itself and
  everything outside the span run densely.
* At the first routed block the stage-3 map is cut into windows (zero padding at the bottom/right, e.g.
  64x64 -> 70x70 = 25 windows of 14 for b+); only the selected windows go on.
* Windowed blocks inside the span attend within each selected window, as in the dense trunk.
* Intermediate global blocks attend over the real (non-padding) tokens of the selected windows only.
* At the merge block the background windows go through the trained shortcut, all windows are put back
  into the map, and the merge block (a global block) runs on the whole map.

Two choices of ours keep the all-windows case identical to the dense trunk (the official code drifts
there): padding tokens are zeroed after ``norm1`` before every windowed attention, as dense window
partitioning does, and global blocks see the selected tokens in the map's raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effsam2.accel.window_routing import STAGE, WindowGrid, WindowSelection
from effsam2.modeling.hiera import Hiera, MultiScaleBlock
from effsam2.modeling.sam2_model import FrameFeatures, SAM2Model
from effsam2.modeling.windows import window_partition, window_unpartition


@dataclass(frozen=True)
class RoutedSpan:
    """Blocks ``first .. merge - 1`` run on selected windows; background windows rejoin before ``merge``."""

    first: int
    merge: int
    window: int

    @classmethod
    def for_trunk(cls, trunk: Hiera) -> RoutedSpan:
        pool_block = trunk.stage_ends[STAGE - 1] + 1  # first block of stage 3, pools its queries
        stage_end = trunk.stage_ends[STAGE]
        window = trunk.window_spec[STAGE]
        first = pool_block + 1
        global_blocks = [i for i in range(first, stage_end + 1) if trunk.specs[i].window_size == 0]
        if not global_blocks:
            raise ValueError("window routing needs a global-attention block in Hiera stage 3 to merge at")
        merge = global_blocks[-1]
        for i in range(first, merge + 1):
            spec = trunk.specs[i]
            if spec.q_stride is not None or spec.dim != spec.dim_out or spec.window_size not in (0, window):
                raise ValueError(f"Hiera block {i} does not fit stage-3 window routing: {spec}")
        return cls(first, merge, window)


class WindowGather:
    """Moves a (B, H, W, C) map to selected / background windows and back, and flattens the selected
    windows' real tokens (raster order) for global attention. Index tensors live on ``device``."""

    def __init__(self, selection: WindowSelection, device: torch.device) -> None:
        grid = selection.grid
        self.grid = grid
        w = grid.window
        selected = selection.indices
        background = torch.nonzero(~selection.selected).flatten()
        self.count = selected.numel()
        self.selected = selected.to(device)
        self.background = background.to(device)
        # windows are put back by concatenating (selected, background) and undoing that order
        self.inverse = torch.argsort(torch.cat([selected, background])).to(device)
        y = (selected // grid.cols)[:, None, None] * w + torch.arange(w)[None, :, None]
        x = (selected % grid.cols)[:, None, None] * w + torch.arange(w)[None, None, :]
        y, x = torch.broadcast_tensors(y, x)  # (count, w, w) map coordinates of every window token
        real = (y < grid.height) & (x < grid.width)
        # None when no selected window reaches into the padding: nothing to zero
        self.valid = None if bool(real.all()) else real[..., None].to(device)
        position = torch.arange(self.count * w * w).reshape(self.count, w, w)
        raster = (y * grid.width + x)[real]
        self.tokens = position[real][torch.argsort(raster)].to(device)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W, C) -> selected (B * count, w, w, C) and background (B * (n - count), w, w, C) windows."""
        b, c, w = x.shape[0], x.shape[-1], self.grid.window
        windows, _ = window_partition(x, w)
        windows = windows.reshape(b, self.grid.num_windows, w, w, c)
        fg = windows.index_select(1, self.selected).reshape(-1, w, w, c)
        bg = windows.index_select(1, self.background).reshape(-1, w, w, c)
        return fg, bg

    def join(self, fg: torch.Tensor, bg: torch.Tensor, batch: int) -> torch.Tensor:
        """Inverse of :meth:`split`: selected and background windows -> (B, H, W, C) map."""
        w, c = self.grid.window, fg.shape[-1]
        both = torch.cat([fg.reshape(batch, self.count, w, w, c),
                          bg.reshape(batch, self.grid.num_windows - self.count, w, w, c)], dim=1)
        windows = both.index_select(1, self.inverse).reshape(-1, w, w, c)
        return window_unpartition(windows, w, self.grid.padded, (self.grid.height, self.grid.width))

    def gather_tokens(self, fg: torch.Tensor, batch: int) -> torch.Tensor:
        """Selected windows (B * count, w, w, C) -> their real tokens in raster order, (B, 1, N, C)."""
        flat = fg.reshape(batch, -1, fg.shape[-1])
        return flat.index_select(1, self.tokens)[:, None]

    def scatter_tokens(self, fg: torch.Tensor, tokens: torch.Tensor, batch: int) -> torch.Tensor:
        """Write (B, 1, N, C) tokens back into the selected windows (padding tokens keep their values)."""
        flat = fg.reshape(batch, -1, fg.shape[-1])
        return flat.index_copy(1, self.tokens, tokens[:, 0]).reshape(fg.shape)


def _windowed_block(block: MultiScaleBlock, windows: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """One windowed block on already-partitioned windows (M, w, w, C); ``valid`` zeroes padding after norm1."""
    normed = block.norm1(windows)
    if valid is not None:
        normed = normed * valid  # dense partitioning pads the *normalised* map with zeros
    windows = block.residual_branch(windows) + block.attn(normed)
    return block.mlp_branch(windows)


@dataclass(frozen=True)
class TrunkPrefix:
    """The trunk run up to the routed span: the map entering block ``span.first`` and the stage maps so far.

    Routing does not change these blocks, so the dense and the routed encodings of the same images can
    share them (shortcut training computes both for every frame).
    """

    x: torch.Tensor  # (B, H, W, C) map entering the first routed block
    outputs: tuple[torch.Tensor, ...]  # (B, C_i, H_i, W_i) maps of the stages that ended before it


def trunk_prefix(trunk: Hiera, images: torch.Tensor) -> TrunkPrefix:
    """Patch embedding and the blocks before the routed span, as ``trunk(images)`` computes them."""
    span = RoutedSpan.for_trunk(trunk)
    x, outputs = trunk.embed(images), []
    for i in range(span.first):
        x = trunk.blocks[i](x)
        if i in trunk.stage_ends:
            outputs.append(x.permute(0, 3, 1, 2))
    return TrunkPrefix(x, tuple(outputs))


def dense_trunk_from(trunk: Hiera, prefix: TrunkPrefix) -> list[torch.Tensor]:
    """The rest of ``trunk(images)`` from its prefix, dense: the same maps as ``trunk(images)``."""
    x, outputs = prefix.x, list(prefix.outputs)
    for i in range(RoutedSpan.for_trunk(trunk).first, len(trunk.blocks)):
        x = trunk.blocks[i](x)
        if i in trunk.stage_ends:
            outputs.append(x.permute(0, 3, 1, 2))
    return outputs


def routed_trunk(trunk: Hiera, images: torch.Tensor | None, selection: WindowSelection,
                 shortcut: nn.Module | None = None, prefix: TrunkPrefix | None = None) -> list[torch.Tensor]:
    """``trunk(images)`` with stage 3 routed: (B, 3, S, S) -> one (B, C_i, H_i, W_i) map per stage.

    The selection applies to every image of the batch. ``shortcut`` maps background windows
    (M, w, w, C) -> (M, w, w, C) at the merge block; None passes them through unchanged (untrained).
    ``prefix`` (from :func:`trunk_prefix`) replaces ``images`` when the blocks before the span already ran.
    """
    span = RoutedSpan.for_trunk(trunk)
    grid = selection.grid
    if grid.window != span.window:
        raise ValueError(f"selection made for window {grid.window}, trunk stage 3 uses {span.window}")
    if prefix is None:
        prefix = trunk_prefix(trunk, images)
    x, outputs = prefix.x, list(prefix.outputs)
    batch = x.shape[0]
    for i in range(span.first, len(trunk.blocks)):
        block = trunk.blocks[i]
        if i == span.first:
            if tuple(x.shape[1:3]) != (grid.height, grid.width):
                raise ValueError(f"selection made for a {grid.height}x{grid.width} stage-3 map, got "
                                 f"{tuple(x.shape[1:3])} (another image size?)")
            gather = WindowGather(selection, x.device)
            fg, bg = gather.split(x)
        if i < span.merge:
            if block.spec.window_size == 0:
                fg = gather.scatter_tokens(fg, block(gather.gather_tokens(fg, batch)), batch)
            else:
                fg = _windowed_block(block, fg, gather.valid)
            continue
        if i == span.merge:
            if shortcut is not None and bg.shape[0] > 0:
                bg = shortcut(bg)
            x = gather.join(fg, bg, batch)
        x = block(x)
        if i in trunk.stage_ends:
            outputs.append(x.permute(0, 3, 1, 2))
    return outputs


def routed_encode(model: SAM2Model, images: torch.Tensor, selection: WindowSelection | None,
                  shortcut: nn.Module | None = None) -> FrameFeatures:
    """Like ``model.encode_image``: (B, 3, S, S) -> :class:`FrameFeatures`, with stage 3 routed.

    A selection of all windows (or None) runs ``model.encode_image`` itself, which computes the same
    features (see tests) without the gather/scatter copies.
    """
    if selection is None or selection.is_full:
        return model.encode_image(images)
    return features_from_trunk(model, routed_trunk(model.image_encoder.trunk, images, selection, shortcut))


def features_from_trunk(model: SAM2Model, trunk_maps: list[torch.Tensor]) -> FrameFeatures:
    """Neck and the decoder's high-resolution projections on trunk maps, as ``model.encode_image`` does."""
    return model.features_from_encoder(model.image_encoder.neck_output(trunk_maps))


def window_grid(model: SAM2Model) -> WindowGrid:
    """The stage-3 window grid of a built model (its config and image size)."""
    return WindowGrid.for_config(model.config)
