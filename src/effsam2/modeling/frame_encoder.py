"""The frame encoder a model runs with: a strategy chosen at build time, like the memory backend.

``DenseFrameEncoder`` (here) runs every frame through the whole image encoder: the official computation.
A routed encoder (Sparse Window Routing, ``effsam2.accel.swr.WindowRouting``) has the same interface and
runs only the windows its router picks. The router's evidence belongs to a session, never to the model:

    router = model.frame_encoder.new_router()        # kept by the session (None for dense)
    feats, selection = model.frame_encoder.encode(model, images, router, prompted=...)
"""

from __future__ import annotations

import torch


class DenseFrameEncoder:
    """Every frame, every window, every block; stateless (no router)."""

    routes = False  # tracked frames use the dense features (cacheable); no decoder attention is needed

    def new_router(self) -> None:
        return None

    def to(self, device: torch.device | str) -> DenseFrameEncoder:
        """Move what the encoder holds besides the model (nothing here) to ``device``."""
        return self

    def encode(self, model, images: torch.Tensor, router: None = None, *, prompted: bool = False):
        """(B, 3, S, S) normalised images -> (``FrameFeatures``, None: no window selection)."""
        return model.encode_image(images), None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
