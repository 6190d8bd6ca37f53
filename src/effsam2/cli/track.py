"""``effsam2 track``: segment and track prompted objects through a video and write masks (``HELP`` says how)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from effsam2.cli.adapt_args import adapt_progress, adapt_settings, add_adapt_options
from effsam2.cli.model_args import add_model_options, build_model_from_args, check_model_args, describe_dtype
from effsam2.cli.prompt_args import ObjectPrompt, add_prompt_options, collect_prompts
from effsam2.cli.tta_args import add_tta_option
from effsam2.configs import ModelConfig
from effsam2.errors import Effsam2Error, PromptError
from effsam2.io.frames import FrameSource, open_frames
from effsam2.io.output import OutputWriter, check_object_id, check_output_folder, parse_formats
from effsam2.io.png_labels import read_binary_mask
from effsam2.predictor.mirror import MirrorAveragingPredictor, with_tta
from effsam2.predictor.prompts import check_frame_index, points_to_model_space
from effsam2.predictor.video import VideoPredictor
from effsam2.train.adapt import adapt_to_prompt, prompt_video
from effsam2.train.vos_data import TrainVideo

HELP = """Segment and track prompted objects through a video and write their masks.

Every input (model, checkpoint, device, video, prompts, --out) is checked before the model is built. The
result (masks/*.png, masks.json, overlay.mp4) is written beside --out and swapped in when complete, so a
run that fails or is interrupted (Ctrl-C, SIGTERM) leaves --out exactly as it was."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("track", help="track prompted objects through a video and write their masks",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path, help="a video file (mp4, mov, mkv, webm, ...) or a folder of frames")
    p.add_argument("--out", type=Path, required=True, help="output folder (new or empty, or see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole once the new result is complete")
    p.add_argument("--format", default="png,rle,mp4", help="comma list of png (palette PNG per frame, DAVIS "
                   "layout), rle (COCO RLE JSON), mp4 (overlay video); default all")
    p.add_argument("--max-frames", type=int, help="track at most this many frames after the first prompted frame "
                   "(and as many before it when it is not frame 0); the overlay video then shows only the "
                   "tracked frames")
    add_model_options(p)
    add_adapt_options(p, "the prompt frames and their masks (needs every object prompted by --mask)")
    add_tta_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_prompt_options(p)
    p.set_defaults(func=run)


def _validate(args) -> tuple[list[ObjectPrompt], tuple[str, ...], ModelConfig]:
    """The options that need neither the video nor the model."""
    formats = parse_formats(args.format)
    check_output_folder(args.out, args.overwrite)
    config = check_model_args(args)  # model name, image size, checkpoint file, device, accelerations
    # stdout, like the closing line: stderr is kept for the one-line error
    print(f"effsam2 track: {config.name} at {config.image_size}px on {args.device}, {describe_dtype(args, config)}")
    if args.max_frames is not None and args.max_frames < 1:
        raise PromptError(f"--max-frames must be >= 1, got {args.max_frames}")
    adapt_settings(args)
    if args.adapt_image_size is not None:
        config.with_image_size(args.adapt_image_size)  # a size this model cannot take fails before any work
    prompts = collect_prompts(args)
    if args.adapt_steps:
        for p in prompts:
            if p.mask is None:
                raise PromptError(f"--adapt-steps adapts the model to the prompt masks: object {p.obj_id} needs "
                                  "--mask, not clicks or a box")
    return prompts, formats, config


def _clicks(p: ObjectPrompt) -> tuple[list | None, list | None]:
    """(points, labels) of a prompt in the predictor's form (None without clicks)."""
    return [(x, y) for x, y, _ in p.points] or None, [label for _, _, label in p.points] or None


def _validate_prompts(prompts: list[ObjectPrompt], formats: tuple[str, ...],
                      frames: FrameSource) -> list[np.ndarray | None]:
    """Check every prompt against the opened video before the model is built (the slow part).

    Object ids must fit the output formats, frames must exist, clicks and boxes must lie in the frame and
    mask files must be readable PNGs of the frame's size. Returns each prompt's mask (None without one).
    """
    video_hw = (frames.height, frames.width)
    masks = []
    for p in prompts:
        try:
            check_object_id(p.obj_id, formats)
            check_frame_index(p.frame, len(frames))
            mask = None
            if p.mask is None:  # the predictor's own conversion, so the same rules apply (image size unused)
                points_to_model_space(*_clicks(p), p.box, video_hw=video_hw, image_size=1, normalize_coords=True)
            else:
                mask = read_binary_mask(p.mask)
                if mask.shape != video_hw:
                    raise PromptError(f"mask {p.mask} is {mask.shape[1]}x{mask.shape[0]} but the video frames "
                                      f"are {video_hw[1]}x{video_hw[0]}")
        except Effsam2Error as err:
            raise PromptError(f"object {p.obj_id} (frame {p.frame}): {err}") from None
        masks.append(mask)
    return masks


def _apply_prompts(predictor: VideoPredictor | MirrorAveragingPredictor, state, prompts: list[ObjectPrompt],
                   masks: list[np.ndarray | None]) -> None:
    for p, mask in zip(prompts, masks):
        if mask is not None:
            predictor.add_new_mask(state, p.frame, p.obj_id, mask)
        else:
            points, labels = _clicks(p)
            predictor.add_new_points_or_box(state, p.frame, p.obj_id, points=points, labels=labels, box=p.box)


def _adaptation_videos(args, prompts: list[ObjectPrompt], masks: list[np.ndarray | None], frames: FrameSource,
                       image_size: int) -> list[TrainVideo]:
    """With --adapt-steps, each mask prompt as a one-frame training video (checked before the model is
    built: a mask too small to learn from is refused here)."""
    if not args.adapt_steps:
        return []
    videos = []
    for p, mask in zip(prompts, masks):
        try:
            videos.append(prompt_video(f"object {p.obj_id}", frames.get(p.frame), mask, image_size))
        except Effsam2Error as err:
            raise PromptError(f"object {p.obj_id} (frame {p.frame}): {err}") from None
    return videos


def _adapt(args, model, videos: list[TrainVideo]):
    """The model fine-tuned on ``videos`` (a copy), with a progress bar showing the loss."""
    settings = adapt_settings(args, model)
    with adapt_progress(settings.total_steps, disable=args.no_progress) as on_step:
        return adapt_to_prompt(model, videos, settings, on_step=on_step).model


def run(args) -> int:
    prompts, formats, config = _validate(args)
    frames = open_frames(args.video)  # a missing, empty or corrupt video fails here, before any output
    try:
        masks = _validate_prompts(prompts, formats, frames)
        videos = _adaptation_videos(args, prompts, masks, frames, args.adapt_image_size or config.image_size)
        model = build_model_from_args(args, "track")
        if videos:
            model = _adapt(args, model, videos)
        predictor = with_tta(VideoPredictor(model), args.tta)
        state = predictor.init_state(frames)
        _apply_prompts(predictor, state, prompts, masks)
        _track_and_write(args, predictor, state, prompts, formats, frames)
    finally:
        frames.close()
    return 0


def _track_and_write(args, predictor: VideoPredictor | MirrorAveragingPredictor, state, prompts: list[ObjectPrompt],
                     formats: tuple[str, ...], frames: FrameSource) -> None:
    first = min(p.frame for p in prompts)
    passes = [{"start_frame_idx": first, "max_frame_num_to_track": args.max_frames, "reverse": False}]
    if first > 0:
        passes.append({"start_frame_idx": first, "max_frame_num_to_track": args.max_frames, "reverse": True})
    # the reverse pass starts on the prompted frame, which the forward pass has already yielded and written
    total = len(set().union(*(predictor.processing_order(state, **kw) for kw in passes)))

    writer = OutputWriter(args.out, formats, frames, overwrite=args.overwrite)
    written: set[int] = set()
    try:
        with tqdm(total=total, desc="tracking", unit="frame", disable=args.no_progress, file=sys.stderr) as bar:
            for kw in passes:
                for frame_idx, obj_ids, logits in predictor.propagate_in_video(state, **kw):
                    if frame_idx in written:
                        continue
                    masks = (logits[:, 0] > 0).cpu().numpy()
                    writer.add(frame_idx, {obj_id: masks[i] for i, obj_id in enumerate(obj_ids)})
                    written.add(frame_idx)
                    bar.update(1)
        with tqdm(total=len(writer.overlay_frames), desc="writing", unit="frame",
                  disable=args.no_progress or "mp4" not in formats, file=sys.stderr) as bar:
            paths = writer.close(on_frame=lambda i: bar.update(1))
    except BaseException:
        writer.abort()
        raise
    print(f"tracked {len(state.objects)} object(s) over {total} frame(s); wrote {len(paths)} file(s) to {args.out}")
