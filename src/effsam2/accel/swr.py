"""Sparse Window Routing for a predictor: one object per model (grid, shortcut, settings) plus a
``RouterState`` per video session.

    swr = WindowRouting.from_model(model)           # None unless model.accel asks for "swr"
    router = swr.new_router()                       # keep in the session; router.reset() per propagation
    for frame_idx in order:
        feats, selection = swr.encode(model, image, router, prompted=frame_has_new_prompts)
        outputs = [track_step(..., return_token_attention=True) for each object]  # or stored entries
        router.observe(outputs)                      # every object's output on this frame

The memory-attention backend (dense, pooled, SMR) is independent of the encoder, so ``swr+smr`` and
``swr+pool`` need nothing more; several objects share one encoding and the router unites their windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effsam2.accel.routed_hiera import routed_encode, window_grid
from effsam2.accel.shortcut import load_shortcut
from effsam2.accel.window_routing import (
    DEFAULT_ROUTER,
    RouterConfig,
    RouterState,
    WindowGrid,
    WindowSelection,
)
from effsam2.modeling.sam2_model import FrameFeatures, SAM2Model


@dataclass
class WindowRouting:
    """Per-model SWR settings: the stage-3 grid, the trained shortcut (None: background windows pass
    through untrained), the router settings and, for benchmarks, a forced fraction of windows."""

    grid: WindowGrid
    shortcut: nn.Module | None
    config: RouterConfig = DEFAULT_ROUTER
    fraction: float | None = None

    @classmethod
    def from_model(cls, model: SAM2Model, config: RouterConfig = DEFAULT_ROUTER) -> WindowRouting | None:
        """From ``model.accel`` (swr, swr_shortcut, swr_fraction); None when SWR is off."""
        spec = model.accel
        if not spec.swr:
            return None
        shortcut = None
        if spec.swr_shortcut is not None:
            shortcut = load_shortcut(spec.swr_shortcut, model.config, model.device)
        return cls(window_grid(model), shortcut, config, spec.swr_fraction)

    def new_router(self) -> RouterState:
        return RouterState(self.config, self.fraction)

    @torch.no_grad()
    def encode(self, model: SAM2Model, images: torch.Tensor, router: RouterState, *,
               prompted: bool = False) -> tuple[FrameFeatures, WindowSelection]:
        """Encode (B, 3, S, S) images of the next frame with the windows the router picks."""
        selection = router.next_selection(self.grid, prompted=prompted)
        return routed_encode(model, images, selection, self.shortcut), selection
