"""Shared test fixtures: where the project's shared data lives."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EFFSAM2_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED} (set EFFSAM2_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def davis_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "davis2016"


@pytest.fixture(scope="session")
def videos_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "videos"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """sam2.1_hiera_t in the official checkpoint layout with non-degenerate random weights."""
    from tests.helpers.weights import random_checkpoint

    path = tmp_path_factory.mktemp("checkpoints") / "sam2.1_hiera_tiny.pt"
    random_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory, videos_dir) -> Path:
    """The first 10 frames of a real clip (bedroom.mp4, 960x540) re-encoded as a short h264 mp4."""
    import av

    path = tmp_path_factory.mktemp("clips") / "bedroom10.mp4"
    with av.open(str(videos_dir / "bedroom.mp4")) as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 960, 540, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == 10:
                break
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), "rgb24")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return path
