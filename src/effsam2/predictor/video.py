"""``VideoPredictor``: the SAM 2 video API (same method names and return values) over effsam2's model.

    predictor = VideoPredictor(model)
    state = predictor.init_state("video.mp4")
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[210, 350]], labels=[1])
    for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state):
        ...  # mask_logits: (num_objects, 1, H, W) at the video's resolution; > 0 is the object

Frames are decoded and encoded lazily (a long video is never held in memory); prompts on a frame are
kept as pending outputs and folded into memory when propagation starts, as the official predictor does.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from effsam2.accel.swr import WindowRouting
from effsam2.accel.window_routing import RouterConfig
from effsam2.dtypes import autocast, resolve_dtype
from effsam2.errors import PromptError
from effsam2.io.frames import open_frames
from effsam2.modeling.memory import MemoryEntry
from effsam2.modeling.sam2_model import NO_OBJ_SCORE, FrameFeatures, PointPrompt, SAM2Model
from effsam2.modeling.tracker import StepOutput, track_objects, track_step, write_memory
from effsam2.predictor.prompts import (
    check_frame_index,
    concat_points,
    mask_to_model_space,
    points_to_model_space,
)
from effsam2.predictor.state import InferenceState, ObjectState, PendingOutput
from effsam2.preprocess import preprocess_frame
from effsam2.timing import IMAGE_ENCODER, NO_TIMER, SectionTimer

PREV_LOGIT_CLAMP = 32.0  # earlier mask logits fed back with new clicks are clamped, as officially


class VideoPredictor:
    def __init__(self, model: SAM2Model, *, non_overlap_masks: bool = False,
                 clear_non_cond_mem_around_input: bool = False, add_all_frames_to_correct_as_cond: bool = False,
                 memory_dtype: torch.dtype = torch.bfloat16, timer: SectionTimer = NO_TIMER,
                 router_config: RouterConfig | None = None, dtype: str | None = None,
                 batch_objects: bool = True) -> None:
        self.model = model.eval()
        # track all objects of a frame as one batch (each reading its own memory); False: one at a time
        self.batch_objects = batch_objects
        # autocast dtype of every model call ("fp32", "bf16", "auto"; None: the model's, see build_model)
        self.dtype = resolve_dtype(dtype or model.autocast_dtype, model.device, model.config.bf16_auto)
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.memory_dtype = memory_dtype  # the official predictor stores memory features in bf16
        self.timer = timer
        # Sparse Window Routing (None unless the model was built with accel "swr"): the model's frame encoder,
        # encoding propagated frames with only the windows the previous frame's objects occupy; router_config
        # overrides its router settings
        self.routing = WindowRouting.from_model(model, router_config)

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ---- session ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def init_state(self, video, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> InferenceState:
        """Open a video (file, frame folder, list of arrays/PIL images or a FrameSource) lazily.

        ``async_loading_frames`` is accepted for API compatibility: frames are always decoded on demand.
        """
        frames = open_frames(video)
        device = self.model.device
        state = InferenceState(frames=frames, num_frames=len(frames), video_height=frames.height,
                               video_width=frames.width, device=device,
                               storage_device=torch.device("cpu") if offload_state_to_cpu else device,
                               offload_video_to_cpu=offload_video_to_cpu,
                               router=self.routing.new_router() if self.routing is not None else None)
        self.frame_features(state, 0)  # most clicks land on frame 0: encode it now, as officially
        return state

    def frame_features(self, state: InferenceState, frame_idx: int) -> FrameFeatures:
        """Dense encoded features of one frame (batch 1), from the cache or computed now."""
        feats = state.features.get(frame_idx)
        if feats is None:
            with self.timer.section(IMAGE_ENCODER), self.autocast():
                feats = self._dense_encode(self._image(state, frame_idx))
            state.features.put(frame_idx, feats)
        return feats

    def _dense_encode(self, images: torch.Tensor) -> FrameFeatures:
        """Cached features: the full encoding for a routed model, else the model's own frame encoder."""
        encoder = self.model.frame_encoder
        if encoder.routes:
            return self.model.encode_image(images)
        return encoder.encode(self.model, images, None)[0]

    def autocast(self):
        """The autocast context of this predictor's model calls (bf16, or nothing for fp32)."""
        return autocast(self.model.device, self.dtype)

    def _image(self, state: InferenceState, frame_idx: int) -> torch.Tensor:
        return preprocess_frame(state.frames.get(frame_idx), self.image_size)[None].to(state.device)

    def _propagation_features(self, state: InferenceState, frame_idx: int, prompted: bool) -> FrameFeatures:
        """Features for tracking a frame: routed through the selected windows when SWR is on.

        Routed features are not cached: a later click on this frame must see the dense features.
        """
        if self.routing is None:
            return self.frame_features(state, frame_idx)
        cached = state.features.get(frame_idx) if prompted else None
        if cached is not None:
            return cached
        with self.timer.section(IMAGE_ENCODER), self.autocast():
            feats, state.window_selection = self.routing.encode(self.model, self._image(state, frame_idx),
                                                                state.router, prompted=prompted)
        return feats

    @torch.inference_mode()
    def reset_state(self, state: InferenceState) -> None:
        """Remove every object, prompt and output (the frames and their cached features stay)."""
        state.objects.clear()
        if state.router is not None:
            state.router.reset()

    # ---- prompts ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def add_new_points_or_box(self, state: InferenceState, frame_idx: int, obj_id: int, points=None, labels=None,
                              clear_old_points: bool = True, normalize_coords: bool = True, box=None):
        """Add clicks (N, 2) with labels (N,) and/or a box (x0, y0, x1, y1) for one object on one frame.

        Returns ``(frame_idx, obj_ids, mask_logits)`` with (num_objects, 1, H, W) logits for that frame.
        """
        frame_idx = check_frame_index(frame_idx, state.num_frames)
        if box is not None and not clear_old_points:
            raise PromptError("a box must come before any click: use clear_old_points=True with a box")
        prompt = points_to_model_space(points, labels, box, video_hw=(state.video_height, state.video_width),
                                       image_size=self.image_size, normalize_coords=normalize_coords)
        obj = state.object(obj_id)
        prompt = PointPrompt(prompt.coords.to(state.device), prompt.labels.to(state.device))
        if not clear_old_points:
            prompt = concat_points(obj.point_inputs.get(frame_idx), prompt)
        obj.point_inputs[frame_idx] = prompt
        obj.mask_inputs.pop(frame_idx, None)
        is_init, reverse, is_cond = self._prompt_kind(obj, frame_idx)
        prev = obj.latest_output(frame_idx, prefer_cond=is_cond)
        prev_logits = None
        if prev is not None and prev.pred_masks is not None:
            prev_logits = prev.pred_masks.to(state.device).clamp(-PREV_LOGIT_CLAMP, PREV_LOGIT_CLAMP)
        entry, _ = self._run_frame(state, obj, frame_idx, is_init_cond_frame=is_init, points=prompt,
                                   reverse=reverse, run_mem_encoder=False, prev_logits=prev_logits)
        obj.pending[frame_idx] = PendingOutput(entry, is_cond)
        self._forget_routing(state)
        return frame_idx, state.obj_ids, self._consolidated_masks(state, frame_idx, is_cond)

    add_new_points = add_new_points_or_box  # the official deprecated alias

    @torch.inference_mode()
    def add_new_mask(self, state: InferenceState, frame_idx: int, obj_id: int, mask):
        """Give an object's (H, W) binary mask on a frame. Returns like :meth:`add_new_points_or_box`."""
        frame_idx = check_frame_index(frame_idx, state.num_frames)
        mask_inputs = mask_to_model_space(mask, video_hw=(state.video_height, state.video_width),
                                          image_size=self.image_size).to(state.device)
        obj = state.object(obj_id)
        obj.mask_inputs[frame_idx] = mask_inputs
        obj.point_inputs.pop(frame_idx, None)
        is_init, reverse, is_cond = self._prompt_kind(obj, frame_idx)
        entry, _ = self._run_frame(state, obj, frame_idx, is_init_cond_frame=is_init, mask_inputs=mask_inputs,
                                   reverse=reverse, run_mem_encoder=False)
        obj.pending[frame_idx] = PendingOutput(entry, is_cond)
        self._forget_routing(state)
        return frame_idx, state.obj_ids, self._consolidated_masks(state, frame_idx, is_cond)

    @staticmethod
    def _forget_routing(state: InferenceState) -> None:
        if state.router is not None:  # after a new prompt the next routed frame runs every window
            state.router.reset()

    def _prompt_kind(self, obj: ObjectState, frame_idx: int) -> tuple[bool, bool, bool]:
        """(is the frame new to this object, its tracking direction, does the prompt make a conditioning frame)."""
        is_init = frame_idx not in obj.frames_tracked
        reverse = False if is_init else obj.frames_tracked[frame_idx]
        return is_init, reverse, is_init or self.add_all_frames_to_correct_as_cond

    @torch.inference_mode()
    def clear_all_prompts_in_frame(self, state: InferenceState, frame_idx: int, obj_id: int,
                                   need_output: bool = True):
        """Remove an object's prompts on a frame; its output there becomes an ordinary tracked output."""
        frame_idx = check_frame_index(frame_idx, state.num_frames)
        obj = state.object(obj_id)
        obj.point_inputs.pop(frame_idx, None)
        obj.mask_inputs.pop(frame_idx, None)
        obj.pending.pop(frame_idx, None)
        entry = obj.memory.cond.pop(frame_idx, None)
        if entry is not None:
            obj.memory.non_cond[frame_idx] = entry
            obj.frames_tracked.pop(frame_idx, None)
        if not need_output:
            return None
        return frame_idx, state.obj_ids, self._consolidated_masks(state, frame_idx, state.pending_is_cond(frame_idx))

    @torch.inference_mode()
    def remove_object(self, state: InferenceState, obj_id: int, strict: bool = False, need_output: bool = True):
        """Forget an object. Returns ``(obj_ids, updated_frames)`` with the re-consolidated prompted frames."""
        if obj_id not in state.objects:
            if strict:
                raise PromptError(f"cannot remove object id {obj_id}: it does not exist (objects: {state.obj_ids})")
            return state.obj_ids, []
        if len(state.objects) == 1:
            self.reset_state(state)
            return state.obj_ids, []
        obj = state.objects[obj_id]
        prompted = sorted(set(obj.point_inputs) | set(obj.mask_inputs))
        del state.objects[obj_id]
        updated = []
        if need_output:
            for frame_idx in prompted:
                updated.append((frame_idx, self._consolidated_masks(state, frame_idx, state.pending_is_cond(frame_idx))))
        return state.obj_ids, updated

    # ---- propagation --------------------------------------------------------------------------------
    @torch.inference_mode()
    def propagate_in_video_preflight(self, state: InferenceState) -> None:
        """Encode the memory of every prompted frame and move the pending outputs into memory."""
        if not state.objects:
            raise PromptError("no object has a prompt yet: add points, a box or a mask first")
        for obj in state.objects.values():
            for frame_idx, pending in obj.pending.items():
                entry = pending.entry
                if entry.maskmem_features is None:
                    high = F.interpolate(entry.pred_masks.to(state.device), size=(self.image_size,) * 2,
                                         mode="bilinear", align_corners=False)
                    # prompted frames are encoded from the binarised mask (official: is_mask_from_pts=True)
                    feats = self.frame_features(state, frame_idx)
                    with self.autocast():
                        write_memory(self.model, entry, feats, high, is_mask_from_pts=True,
                                     memory_dtype=self.memory_dtype)
                    self._store(state, entry)
                (obj.memory.cond if pending.is_cond else obj.memory.non_cond)[frame_idx] = entry
                if self.clear_non_cond_mem_around_input:
                    self._clear_non_cond_memory_around(obj, frame_idx)
            obj.pending.clear()
            if not obj.memory.cond:
                raise PromptError(f"object id {obj.obj_id} has no prompt on any frame: add points, a box or a mask")
            for frame_idx in obj.memory.cond:
                obj.memory.non_cond.pop(frame_idx, None)

    def _clear_non_cond_memory_around(self, obj: ObjectState, frame_idx: int) -> None:
        """Drop ``obj``'s non-conditioning memory within reach of a frame it was prompted on.

        With ``clear_non_cond_mem_around_input`` the frames tracked around a correction may hold outdated
        appearance of the object. Only the prompted object's memory goes: the official SAM 2.1 predictor calls
        a per-object ``_clear_obj_non_cond_mem_around_input(state, frame_idx, obj_idx)`` in the same two places
        (sam2 1.1.0 calls it without defining it, so that flag cannot be run there for comparison).
        """
        tc = self.model.config.tracker
        reach = tc.memory_temporal_stride * tc.num_maskmem
        for t in range(frame_idx - reach, frame_idx + reach + 1):
            obj.memory.non_cond.pop(t, None)

    @torch.inference_mode()
    def propagate_in_video(self, state: InferenceState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Track every object frame by frame; yields ``(frame_idx, obj_ids, mask_logits (N, 1, H, W))``."""
        self.propagate_in_video_preflight(state)
        if state.router is not None:
            state.router.reset()  # the first frame of a propagation runs every window
        order = self.processing_order(state, start_frame_idx, max_frame_num_to_track, reverse)
        yield from self.track_frames(state, order, reverse)

    def track_frames(self, state: InferenceState, order, reverse: bool) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Track every object over ``order`` (frames in processing order); prompts must be consolidated."""
        routed = state.router is not None
        for frame_idx in order:
            prompted = any(frame_idx in obj.memory.cond for obj in state.objects.values())
            tracked = [obj for obj in state.objects.values() if frame_idx not in obj.memory.cond]
            feats = self._propagation_features(state, frame_idx, prompted) if tracked else None
            batched = self.batch_objects and len(tracked) > 1
            if batched:
                entries, batch_step = self._track_batch(state, tracked, frame_idx, feats, reverse, routed)
                new_entries = {obj.obj_id: entry for obj, entry in zip(tracked, entries)}
            masks, outputs = [], [batch_step] if batched else []
            for obj in state.objects.values():
                entry = obj.memory.cond.get(frame_idx)
                if entry is not None:
                    pred = entry.pred_masks.to(state.device)
                    outputs.append(entry)
                    if self.clear_non_cond_mem_around_input:
                        self._clear_non_cond_memory_around(obj, frame_idx)
                elif batched:
                    entry = new_entries[obj.obj_id]
                    pred = entry.pred_masks.to(state.device)
                    obj.memory.non_cond[frame_idx] = entry
                else:
                    step = self._track(state, obj, frame_idx, feats, is_init_cond_frame=False, reverse=reverse,
                                       run_mem_encoder=True, return_token_attention=routed)
                    entry, pred = step.entry, step.heads.low_res_masks
                    outputs.append(step)
                    obj.memory.non_cond[frame_idx] = entry
                obj.frames_tracked[frame_idx] = reverse
                masks.append(pred)
            if routed:
                state.router.observe(outputs)
            yield frame_idx, state.obj_ids, self._video_resolution(state, torch.cat(masks, dim=0))

    def processing_order(self, state: InferenceState, start_frame_idx: int | None,
                         max_frame_num_to_track: int | None, reverse: bool) -> range:
        """Frames in the order propagation visits them (official rules; reverse from 0 visits nothing)."""
        if start_frame_idx is None:
            start_frame_idx = min(t for obj in state.objects.values() for t in obj.memory.cond)
        start_frame_idx = check_frame_index(start_frame_idx, state.num_frames)
        if max_frame_num_to_track is None:
            if state.num_frames is None:
                raise PromptError("a stream has no end: give max_frame_num_to_track")
            max_frame_num_to_track = state.num_frames
        if max_frame_num_to_track < 0:
            raise PromptError(f"max_frame_num_to_track must be >= 0, got {max_frame_num_to_track}")
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            return range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        end = start_frame_idx + max_frame_num_to_track
        if state.num_frames is not None:  # a stream has no known length
            end = min(end, state.num_frames - 1)
        return range(start_frame_idx, end + 1)

    # ---- one object on one frame ----------------------------------------------------------------------
    def _run_frame(self, state: InferenceState, obj: ObjectState, frame_idx: int, *, is_init_cond_frame: bool,
                   reverse: bool, run_mem_encoder: bool, points: PointPrompt | None = None,
                   mask_inputs: torch.Tensor | None = None,
                   prev_logits: torch.Tensor | None = None) -> tuple[MemoryEntry, torch.Tensor]:
        """Run the tracker for one object on a prompted frame (dense features); returns (entry, low-res logits)."""
        step = self._track(state, obj, frame_idx, self.frame_features(state, frame_idx),
                           is_init_cond_frame=is_init_cond_frame, reverse=reverse, run_mem_encoder=run_mem_encoder,
                           points=points, mask_inputs=mask_inputs, prev_logits=prev_logits)
        return step.entry, step.heads.low_res_masks

    def _track(self, state: InferenceState, obj: ObjectState, frame_idx: int, feats: FrameFeatures, *,
               is_init_cond_frame: bool, reverse: bool, run_mem_encoder: bool, points: PointPrompt | None = None,
               mask_inputs: torch.Tensor | None = None, prev_logits: torch.Tensor | None = None,
               return_token_attention: bool = False) -> StepOutput:
        """One tracking step of one object; the stored entry's large tensors go to the storage device."""
        with self.autocast():
            step = track_step(self.model, frame_idx, feats, obj.memory, is_init_cond_frame=is_init_cond_frame,
                              points=points, mask_inputs=mask_inputs, num_frames=state.num_frames, reverse=reverse,
                              run_mem_encoder=run_mem_encoder, prev_sam_mask_logits=prev_logits,
                              return_token_attention=return_token_attention,
                              memory_dtype=self.memory_dtype, timer=self.timer)
        self._store(state, step.entry)
        return step

    def _track_batch(self, state: InferenceState, objs: list[ObjectState], frame_idx: int, feats: FrameFeatures,
                     reverse: bool, return_token_attention: bool) -> tuple[list[MemoryEntry], StepOutput]:
        """One tracking step of several objects as a batch (``tracker.track_objects``)."""
        with self.autocast():
            entries, step = track_objects(self.model, frame_idx, feats, [o.memory for o in objs],
                                          num_frames=state.num_frames, reverse=reverse,
                                          return_token_attention=return_token_attention,
                                          memory_dtype=self.memory_dtype, timer=self.timer)
        for entry in entries:
            self._store(state, entry)
        return entries, step

    @staticmethod
    def _store(state: InferenceState, entry: MemoryEntry) -> None:
        """Move an entry's large tensors to the storage device (CPU when offloading state)."""
        entry.pred_masks = entry.pred_masks.to(state.storage_device)
        if entry.maskmem_features is not None:
            entry.maskmem_features = entry.maskmem_features.to(state.storage_device)

    # ---- outputs ---------------------------------------------------------------------------------------
    def _consolidated_masks(self, state: InferenceState, frame_idx: int, is_cond: bool) -> torch.Tensor:
        """Every object's latest logits on a frame at video resolution; -1024 for objects without one."""
        h, w = state.video_height, state.video_width
        out = torch.full((len(state.objects), 1, h, w), NO_OBJ_SCORE, dtype=torch.float32, device=state.device)
        for i, obj in enumerate(state.objects.values()):
            entry = obj.latest_output(frame_idx, prefer_cond=is_cond)
            if entry is not None:
                out[i: i + 1] = F.interpolate(entry.pred_masks.to(state.device).float(), size=(h, w),
                                              mode="bilinear", align_corners=False)
        return self._suppress_overlaps(out)

    def _video_resolution(self, state: InferenceState, low_res: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) low-res logits -> (N, 1, H, W) at the video's resolution (bilinear)."""
        masks = F.interpolate(low_res.float(), size=(state.video_height, state.video_width), mode="bilinear",
                              align_corners=False)
        return self._suppress_overlaps(masks)

    def _suppress_overlaps(self, masks: torch.Tensor) -> torch.Tensor:
        """With ``non_overlap_masks``, only the highest-scoring object keeps each pixel."""
        if not self.non_overlap_masks or masks.size(0) <= 1:
            return masks
        winner = torch.argmax(masks, dim=0, keepdim=True)
        keep = winner == torch.arange(masks.size(0), device=masks.device)[:, None, None, None]
        return torch.where(keep, masks, torch.clamp(masks, max=-10.0))
