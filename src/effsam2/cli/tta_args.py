"""``--tta none|mirror``: test-time augmentation, shared by ``effsam2 eval`` and ``effsam2 track`` (the work
itself is :mod:`effsam2.predictor.mirror`)."""

from __future__ import annotations

from effsam2.predictor.mirror import TTA_KINDS


def add_tta_option(group) -> None:
    group.add_argument("--tta", choices=TTA_KINDS, default="none",
                       help="test-time augmentation: mirror tracks the video and its left-right mirror image "
                            "and averages the two mask logits (twice the compute; docs/models.md has what it "
                            "gains); default none")
