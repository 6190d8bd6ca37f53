"""Sparse Window Routing as the model's frame encoder (``model.frame_encoder``), chosen at build time for
accel ``swr``; each video session keeps its own ``RouterState``.

    swr = model.frame_encoder                       # a WindowRouting (routes=True) when built with "swr"
    router = swr.new_router()                       # kept by the session; router.reset() per propagation
    for frame_idx in order:
        feats, selection = swr.encode(model, image, router, prompted=frame_has_new_prompts)
        outputs = [track_step(..., return_token_attention=True) for each object]  # or stored entries
        router.observe(outputs)                      # every object's output on this frame

It has the interface of ``effsam2.modeling.frame_encoder.DenseFrameEncoder``. The memory-attention backend
(dense, pooled, SMR) is independent of the encoder, so ``swr+smr`` and ``swr+pool`` need nothing more;
several objects share one encoding and the router unites their windows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from effsam2.accel.plugins import BuiltinAcceleration
from effsam2.accel.routed_hiera import routed_encode
from effsam2.accel.shortcut import load_shortcut
from effsam2.accel.window_routing import (
    DEFAULT_ROUTER,
    RouterConfig,
    RouterState,
    WindowGrid,
    WindowSelection,
)
from effsam2.configs import ModelConfig
from effsam2.errors import Effsam2Error
from effsam2.modeling.sam2_model import FrameFeatures, SAM2Model


def check_fraction(fraction: float | None) -> None:
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise Effsam2Error(f"SWR window fraction must be in (0, 1], got {fraction:g}")


SWR = BuiltinAcceleration(
    "swr", "Sparse Window Routing: Hiera stage-3 windows holding an object get the full blocks, others a shortcut",
    slot="frame", checks={"swr_fraction": check_fraction})


@dataclass
class WindowRouting:
    """Per-model SWR settings: the stage-3 grid, the trained shortcut (None: background windows pass
    through untrained), the router settings and, for benchmarks, a forced fraction of windows."""

    grid: WindowGrid
    shortcut: nn.Module | None
    config: RouterConfig = DEFAULT_ROUTER
    fraction: float | None = None

    routes = True  # propagated frames get routed (uncached) features; the router reads decoder attention

    @classmethod
    def for_spec(cls, spec, config: ModelConfig) -> WindowRouting:
        """For an ``AccelSpec`` with ``swr`` (its swr_shortcut, swr_fraction) and the model's config; refuses a
        trunk without Hiera's stage-3 windows with one line."""
        shortcut = None if spec.swr_shortcut is None else load_shortcut(spec.swr_shortcut, config)
        return cls(WindowGrid.for_config(config), shortcut, DEFAULT_ROUTER, spec.swr_fraction)

    @staticmethod
    def from_model(model: SAM2Model, config: RouterConfig | None = None) -> WindowRouting | None:
        """The model's routed frame encoder, with other router settings when ``config`` is given; None when
        the model was built without SWR."""
        routing = model.frame_encoder
        if not routing.routes:
            return None
        if config is None or not isinstance(routing, WindowRouting):  # router settings are SWR's
            return routing
        return replace(routing, config=config)

    def to(self, device: torch.device | str) -> WindowRouting:
        """Move the trained shortcut with the model (``build_model`` calls this with the model's device)."""
        if self.shortcut is not None:
            self.shortcut.to(device)
        return self

    def new_router(self) -> RouterState:
        return RouterState(self.config, self.fraction)

    @torch.no_grad()
    def encode(self, model: SAM2Model, images: torch.Tensor, router: RouterState, *,
               prompted: bool = False) -> tuple[FrameFeatures, WindowSelection]:
        """Encode (B, 3, S, S) images of the next frame with the windows the router picks."""
        selection = router.next_selection(self.grid, prompted=prompted)
        return routed_encode(model, images, selection, self.shortcut), selection
