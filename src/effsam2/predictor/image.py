"""``ImagePredictor``: the SAM 2 image API (method names and return values of ``SAM2ImagePredictor``).

    predictor = ImagePredictor(model)
    predictor.set_image(rgb)                       # (H, W, 3) uint8 RGB array or a PIL image
    masks, ious, low_res = predictor.predict(point_coords=[[210, 350]], point_labels=[1])
    # masks (3, H, W) float32 {0, 1}; ious (3,); low_res (3, S/4, S/4) logits (256 x 256 at S = 1024)
    masks, ious, _ = predictor.predict(point_coords=..., point_labels=..., mask_input=low_res[ious.argmax()][None],
                                       multimask_output=False)

The image is embedded once (``set_image``) and any number of prompts are decoded against it. The
numerics follow the official predictor: the image is squashed to S x S with antialiased bilinear
interpolation on the [0, 1] float image (torchvision ``Resize`` on tensors), normalised with the ImageNet
statistics, and the learned ``no_mem_embed`` is added to the stride-16 features (an image is a video
frame without memory). Prompts go to the decoder directly (no object-score masking, unlike tracking).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from effsam2.dtypes import autocast, resolve_dtype
from effsam2.errors import Effsam2Error, PromptError
from effsam2.io.convert import image_to_rgb
from effsam2.modeling.sam2_model import PointPrompt, SAM2Model
from effsam2.predictor.prompts import points_to_model_space
from effsam2.preprocess import IMAGENET_MEAN, IMAGENET_STD
from effsam2.timing import IMAGE_ENCODER, MASK_DECODER, NO_TIMER, SectionTimer

LOW_RES_CLAMP = 32.0  # the official predictor clamps the returned low-res logits to +-32


def image_to_array(image) -> np.ndarray:
    """A PIL image (any mode) or an (H, W, 3) uint8 RGB array -> (H, W, 3) uint8 array.

    PIL images follow the frame-source conversion rules (``effsam2.io.convert.image_to_rgb``: 16-bit
    images are scaled to 8 bits, not clipped); empty images are refused.
    """
    if isinstance(image, Image.Image):
        image = image_to_rgb(image, "image")
    elif not isinstance(image, np.ndarray):
        raise Effsam2Error(f"an image must be an (H, W, 3) uint8 RGB numpy array or a PIL image, "
                           f"got {type(image).__name__}")
    elif image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise Effsam2Error(f"an image array must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise Effsam2Error(f"the image is empty: shape {image.shape}")
    return image


def image_to_model_input(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32 normalised input, as the official image predictor makes it.

    [0, 1] scaling in float32, then antialiased bilinear resize of the float image (not PIL's bicubic on
    uint8 that the video predictor uses), then (x - mean) / std.
    """
    # np.array copies: arrays from PIL are read-only, which torch.from_numpy warns about
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32).div(255)
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True)[0]
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


@dataclass
class ImageEmbedding:
    """The embedded image(s) that prompts are decoded against.

    image_embed: (B, C, h, w) stride-16 features (+ ``no_mem_embed``); high_res_feats: [(B, C/8, 4h, 4w),
    (B, C/4, 2h, 2w)] or None; orig_hw: (H, W) of each original image; is_batch: set by ``set_image_batch``.
    """

    image_embed: torch.Tensor
    high_res_feats: list[torch.Tensor] | None
    orig_hw: list[tuple[int, int]]
    is_batch: bool


def _numeric_array(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PromptError(f"{what} must be numeric: {err}") from None
    if not np.isfinite(arr).all():
        raise PromptError(f"{what} contains NaN or infinity")
    return arr


class ImagePredictor:
    """Embed an image once, then decode masks for any number of point / box / mask prompts.

    ``max_hole_area`` / ``max_sprinkle_area`` exist for signature compatibility only: the official hole and
    sprinkle filling needs its CUDA connected-components extension and is skipped without it (the default
    of both is 0, i.e. off), so effsam2 does not implement it and rejects values above 0.
    """

    def __init__(self, model: SAM2Model, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0, *, timer: SectionTimer = NO_TIMER, dtype: str | None = None) -> None:
        if max_hole_area > 0 or max_sprinkle_area > 0:
            raise Effsam2Error("hole / sprinkle filling (max_hole_area, max_sprinkle_area) is not supported: "
                               "it needs the official CUDA extension; leave both at 0")
        self.model = model.eval()
        # autocast dtype of the model calls ("fp32", "bf16", "auto"; None: the model's, see build_model)
        self.dtype = resolve_dtype(dtype or model.autocast_dtype, model.device, model.config.bf16_auto)
        self.mask_threshold = mask_threshold
        self.timer = timer
        self._embedding: ImageEmbedding | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def orig_hw(self) -> list[tuple[int, int]]:
        """(H, W) of each image set; empty when none is."""
        return [] if self._embedding is None else list(self._embedding.orig_hw)

    def reset_predictor(self) -> None:
        """Forget the current image(s) and their embedding."""
        self._embedding = None

    # ---- embedding ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def set_image(self, image) -> None:
        """Embed one image: an (H, W, 3) uint8 RGB numpy array or a PIL image."""
        self.reset_predictor()
        rgb = image_to_array(image)
        self._embedding = self._embed([rgb], is_batch=False)

    @torch.inference_mode()
    def set_image_batch(self, image_list) -> None:
        """Embed a list of images (each as for :meth:`set_image`, sizes may differ) in one encoder pass."""
        self.reset_predictor()
        if not isinstance(image_list, (list, tuple)) or len(image_list) == 0:
            raise Effsam2Error("set_image_batch expects a non-empty list of images")
        self._embedding = self._embed([image_to_array(img) for img in image_list], is_batch=True)

    def _embed(self, rgbs: list[np.ndarray], is_batch: bool) -> ImageEmbedding:
        batch = torch.stack([image_to_model_input(rgb, self.image_size) for rgb in rgbs]).to(self.device)
        with self.timer.section(IMAGE_ENCODER), autocast(self.device, self.dtype):
            feats = self.model.encode_image(batch)
        embed = feats.vision_feats
        if self.model.config.tracker.directly_add_no_mem_embed:
            # an image is treated as a frame with no memory, as the model saw single images in training
            embed = embed + self.model.no_mem_embed.view(1, -1, 1, 1)
        orig_hw = [(int(rgb.shape[0]), int(rgb.shape[1])) for rgb in rgbs]
        return ImageEmbedding(embed, feats.high_res, orig_hw, is_batch)

    def get_image_embedding(self) -> torch.Tensor:
        """(B, C, h, w) embedding of the image(s) set (B = 1 after ``set_image``; 256 x 64 x 64 at 1024)."""
        return self._require_embedding(batch=None).image_embed

    def _require_embedding(self, batch: bool | None) -> ImageEmbedding:
        emb = self._embedding
        if emb is None:
            raise Effsam2Error("no image is set: call set_image(...) or set_image_batch(...) first")
        if batch is True and not emb.is_batch:
            raise Effsam2Error("predict_batch needs images set with set_image_batch(...); use predict()")
        if batch is False and emb.is_batch:
            raise Effsam2Error("images were set with set_image_batch(...): use predict_batch(), or set_image()")
        return emb

    # ---- prediction ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False, normalize_coords: bool = True):
        """Decode masks for the image set with :meth:`set_image`.

        point_coords (N, 2) x, y and point_labels (N,) in {1 foreground, 0 background}; box (4,) x0, y0, x1,
        y1; pixels of the original image, or [0, 1] fractions with ``normalize_coords=False``. mask_input
        (1, S/4, S/4) low-res logits from an earlier call. Several prompts at once: (B, N, 2) / (B, N) /
        (B, 4) / (B, 1, S/4, S/4), which adds a leading B axis to the outputs.

        Returns numpy ``(masks (C, H, W), iou_predictions (C,), low_res_masks (C, S/4, S/4))`` with C = 3
        for ``multimask_output`` else 1; masks are float32 0/1 (logits with ``return_logits``), low-res
        logits are clamped to +-32.
        """
        emb = self._require_embedding(batch=False)
        return self._predict_one(emb, 0, point_coords, point_labels, box, mask_input, multimask_output,
                                 return_logits, normalize_coords)

    @torch.inference_mode()
    def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None,
                      mask_input_batch=None, multimask_output: bool = True, return_logits: bool = False,
                      normalize_coords: bool = True):
        """:meth:`predict` for each image set with :meth:`set_image_batch`; each argument is a list with one
        entry (or None) per image. Returns lists ``(masks, iou_predictions, low_res_masks)``."""
        emb = self._require_embedding(batch=True)
        n = len(emb.orig_hw)
        args = []
        for what, values in (("point_coords_batch", point_coords_batch), ("point_labels_batch", point_labels_batch),
                             ("box_batch", box_batch), ("mask_input_batch", mask_input_batch)):
            if values is not None and len(values) != n:
                raise PromptError(f"{what} has {len(values)} entries but {n} images are set")
            args.append(values if values is not None else [None] * n)
        outputs = [self._predict_one(emb, i, *(a[i] for a in args), multimask_output, return_logits,
                                     normalize_coords) for i in range(n)]
        return [o[0] for o in outputs], [o[1] for o in outputs], [o[2] for o in outputs]

    def _predict_one(self, emb: ImageEmbedding, img_idx: int, point_coords, point_labels, box, mask_input,
                     multimask_output: bool, return_logits: bool, normalize_coords: bool):
        points = self._point_prompt(point_coords, point_labels, box, emb.orig_hw[img_idx], normalize_coords)
        masks_in = None if mask_input is None else self._mask_prompt(
            mask_input, None if points is None else points.coords.size(0))
        # number of prompts decoded together (rows of clicks / boxes, or of mask inputs alone)
        num = points.coords.size(0) if points is not None else (1 if masks_in is None else masks_in.size(0))
        if masks_in is not None and masks_in.size(0) != num:
            masks_in = masks_in.expand(num, -1, -1, -1)
        low_res, ious = self._decode(emb, img_idx, points, masks_in, multimask_output, num)
        masks = F.interpolate(low_res, size=emb.orig_hw[img_idx], mode="bilinear", align_corners=False)
        low_res = low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        if not return_logits:
            masks = masks > self.mask_threshold
        out = [t.float().cpu().numpy() for t in (masks, ious, low_res)]
        # one prompt: drop the prompt axis (as the official ``squeeze(0)`` does)
        return tuple(o[0] for o in out) if num == 1 else tuple(out)

    def _decode(self, emb: ImageEmbedding, img_idx: int, points: PointPrompt | None, masks_in: torch.Tensor | None,
                multimask_output: bool, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder for ``num`` prompts -> (num, C, S/4, S/4) float logits, (num, C) ious."""
        image = emb.image_embed[img_idx: img_idx + 1].expand(num, -1, -1, -1)
        high = None if emb.high_res_feats is None else [
            f[img_idx: img_idx + 1].expand(num, -1, -1, -1) for f in emb.high_res_feats]
        encoder = self.model.sam_prompt_encoder
        with self.timer.section(MASK_DECODER), autocast(self.device, self.dtype):
            sparse, dense = encoder(points=None if points is None else (points.coords, points.labels), boxes=None,
                                    masks=masks_in)
            out = self.model.sam_mask_decoder(image, encoder.get_dense_pe(), sparse, dense, multimask_output, high)
        return out.masks.float(), out.iou.float()

    # ---- prompt validation ----------------------------------------------------------------------------
    def _point_prompt(self, point_coords, point_labels, box, orig_hw: tuple[int, int],
                      normalize_coords: bool) -> PointPrompt | None:
        """Clicks and/or boxes -> (B, M, 2) model-space coords with (B, M) labels, box corners first."""
        if (point_coords is None) != (point_labels is None):
            raise PromptError("point_coords and point_labels must be given together")
        if point_coords is None and box is None:
            return None
        pts = labels = boxes = None
        rows = set()
        if point_coords is not None:
            pts = _numeric_array(point_coords, "point_coords")
            labels = _numeric_array(point_labels, "point_labels")
            if pts.ndim == 2 and labels.ndim == 1:
                pts, labels = pts[None], labels[None]
            if pts.ndim != 3 or pts.shape[-1] != 2 or labels.ndim != 2:
                raise PromptError(f"point_coords must be (N, 2) with point_labels (N,) (or (B, N, 2) with (B, N)), "
                                  f"got {pts.shape} and {labels.shape}")
            if labels.shape != pts.shape[:2]:
                raise PromptError(f"{pts.shape[-2]} points but {labels.shape[-1]} labels "
                                  f"(point_coords {pts.shape}, point_labels {labels.shape})")
            rows.add(pts.shape[0])
        if box is not None:
            boxes = _numeric_array(box, "box")
            boxes = boxes[None] if boxes.ndim == 1 else boxes
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise PromptError(f"box must be (4,) x0, y0, x1, y1 (or (B, 4)), got shape {boxes.shape}")
            rows.add(boxes.shape[0])
        if len(rows) > 1:
            raise PromptError(f"point prompts for {pts.shape[0]} objects but {boxes.shape[0]} boxes")
        num = rows.pop()
        if num == 0:
            raise PromptError("empty prompt batch: give at least one row of points or one box")
        per_row = [points_to_model_space(None if pts is None else pts[i], None if labels is None else labels[i],
                                         None if boxes is None else boxes[i], video_hw=orig_hw,
                                         image_size=self.image_size, normalize_coords=normalize_coords)
                   for i in range(num)]
        coords = torch.cat([p.coords for p in per_row]).to(self.device)
        return PointPrompt(coords, torch.cat([p.labels for p in per_row]).to(self.device))

    def _mask_prompt(self, mask_input, num: int | None) -> torch.Tensor:
        """(1, h, w) / (h, w) / (B, 1, h, w) low-res logits -> (B, 1, h, w) float on the device."""
        m = torch.from_numpy(_numeric_array(mask_input, "mask_input")).float()
        size = tuple(self.model.sam_prompt_encoder.mask_input_size)
        m = m[None] if m.dim() == 2 else m
        m = m[None] if m.dim() == 3 else m
        if m.dim() != 4 or m.size(1) != 1 or tuple(m.shape[-2:]) != size:
            raise PromptError(f"mask_input must be one low-res logit mask (1, {size[0]}, {size[1]}) such as "
                              f"low_res_masks[i][None] from an earlier predict, got shape {tuple(m.shape)}")
        if num is not None and m.size(0) not in (1, num):
            raise PromptError(f"mask_input has {m.size(0)} masks for {num} prompts")
        return m.to(self.device)
