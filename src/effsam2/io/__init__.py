"""Video input and mask output for effsam2.

Input: ``open_frames(source)`` returns a lazy ``FrameSource`` (video file, image folder, single
image, in-memory frames) giving (H, W, 3) uint8 RGB frames by index. Annotated datasets:
``open_dataset(root)`` reads DAVIS-2016/2017 and SA-V folders lazily (``VOSDataset`` of ``VOSSequence``s),
for the evaluation and the trainers alike.

Output: DAVIS palette PNGs (``save_label_png``), COCO RLE JSON (``RleJsonWriter``), overlay videos
(``write_overlay_video``) and ``OutputWriter``, which drives all three for the CLI. Every file is
written atomically (``atomic_write``, ``atomic_path``).
"""

from effsam2.io.atomic import atomic_path, atomic_write
from effsam2.io.convert import to_rgb_uint8
from effsam2.io.datasets import VOSDataset, VOSSequence, open_dataset
from effsam2.io.frames import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    ArrayFrameSource,
    FrameIndexError,
    FrameSource,
    natural_sort_key,
    open_frames,
)
from effsam2.io.image_folder import ImageFileSource, ImageFilesSource, ImageFolderSource
from effsam2.io.masks import (
    as_bool_mask,
    as_label_map,
    check_label_id,
    davis_palette,
    labels_from_masks,
    save_label_png,
)
from effsam2.io.output import OUTPUT_FORMATS, OutputWriter, parse_formats
from effsam2.io.overlay import overlay_labels, pick_video_encoder, write_overlay_video
from effsam2.io.png_labels import read_binary_mask, read_label_png
from effsam2.io.rle import RleDocument, RleJsonWriter, decode_rle, encode_rle, read_rle_json
from effsam2.io.video_file import DEFAULT_CACHE_BYTES, NotAVideoError, VideoFileSource

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "IMAGE_SUFFIXES",
    "OUTPUT_FORMATS",
    "VIDEO_SUFFIXES",
    "ArrayFrameSource",
    "FrameIndexError",
    "FrameSource",
    "ImageFileSource",
    "ImageFilesSource",
    "ImageFolderSource",
    "NotAVideoError",
    "OutputWriter",
    "RleDocument",
    "RleJsonWriter",
    "VOSDataset",
    "VOSSequence",
    "VideoFileSource",
    "as_bool_mask",
    "as_label_map",
    "atomic_path",
    "atomic_write",
    "check_label_id",
    "davis_palette",
    "decode_rle",
    "encode_rle",
    "labels_from_masks",
    "natural_sort_key",
    "open_dataset",
    "open_frames",
    "overlay_labels",
    "parse_formats",
    "pick_video_encoder",
    "read_binary_mask",
    "read_label_png",
    "read_rle_json",
    "save_label_png",
    "to_rgb_uint8",
    "write_overlay_video",
]
