"""Training the SWR shortcut: make routed features reproduce the dense memory-conditioned features.

What the official Efficient-SAM2 training does, and this module follows: the SAM 2 model is frozen and
only the shortcut learns; each clip is tracked with the *dense* model (its masks, memory and object
pointers drive everything); on tracked frames the same image is also encoded with routing, where the
windows come from the router applied to the dense outputs of the previous frame, and the loss is the MSE
between the memory-conditioned features (``tracker.condition_on_memory``) of the dense and the routed
encodings, both read against the dense memory. AdamW, lr 1e-4. The official loop routes with a score
threshold of 3 and a saliency mass of 0.6 while training (5 and 0.7 at inference); so does ours.

Our choices (the official script reads SA-V ground-truth masks; clips here are unlabeled):

* Prompt: one positive click at the centre of each clip's first frame (a point prompt, so frame 0
  gives three mask candidates). Any object works for this loss, because the target is the dense
  model's own features; the centre is where videos usually put their subject.
* One optimisation step per clip: the losses of the clip's routed frames are averaged (gradients
  accumulated), then AdamW steps. Frames whose selection keeps every window add nothing (no background
  goes through the shortcut). The official loop accumulates 16 frames and uses every third frame.
* Resumable: after every ``save_every`` steps the shortcut, optimizer, step counter, RNG state and the
  loss history are written atomically next to the output (``<out stem>.train-state.pt``), and the
  shortcut itself to the output. A new run with the same output resumes from that state; nothing is
  lost beyond the last save. The state file is removed when training completes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from effsam2.accel.routed_hiera import (
    dense_trunk_from,
    features_from_trunk,
    routed_trunk,
    trunk_prefix,
    window_grid,
)
from effsam2.accel.shortcut import WindowShortcut, new_shortcut, save_shortcut
from effsam2.accel.window_routing import RouterConfig, RouterEvidence, route_windows
from effsam2.errors import Effsam2Error
from effsam2.modeling.sam2_model import PointPrompt, SAM2Model
from effsam2.modeling.tracker import ObjectMemory, condition_on_memory, track_step
from effsam2.train.clips import Clip, load_clip

TRAIN_ROUTER = RouterConfig(score_threshold=3.0, saliency_mass=0.6)  # the official training values
STATE_FORMAT = "effsam2-shortcut-train-state"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a run; ``fingerprint`` (all but the epoch count) must match to resume."""

    model: str
    image_size: int
    clips: list[Clip]
    epochs: int
    lr: float = 1e-4
    save_every: int = 1
    seed: int = 0
    router: RouterConfig = field(default_factory=lambda: TRAIN_ROUTER)

    @property
    def total_steps(self) -> int:
        return len(self.clips) * self.epochs

    def fingerprint(self) -> dict:
        return {"model": self.model, "image_size": self.image_size, "lr": self.lr, "seed": self.seed,
                "router": asdict(self.router), "clips": [asdict(c) for c in self.clips]}


@dataclass
class StepResult:
    loss: float | None  # mean reconstruction MSE over the routed frames, None when none was routed
    routed_frames: int
    window_fraction: float  # mean fraction of windows kept on the routed frames


def state_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.train-state.pt")


def centre_click(image_size: int, device: torch.device) -> PointPrompt:
    """One positive click at the image centre, in model pixels (batch 1)."""
    centre = torch.tensor([[[image_size / 2, image_size / 2]]], device=device)
    return PointPrompt(centre, torch.ones(1, 1, dtype=torch.int32, device=device))


def clip_losses(model: SAM2Model, shortcut: WindowShortcut, frames: list[torch.Tensor],
                router: RouterConfig = TRAIN_ROUTER, backward: bool = False) -> StepResult:
    """Track ``frames`` densely from a centre click and measure the routed reconstruction loss.

    With ``backward`` each routed frame's loss is back-propagated as soon as it is computed, and the
    shortcut's gradients are then divided by the number of routed frames: the gradient of the mean loss
    (the caller steps the optimizer).
    """
    device = model.device
    grid = window_grid(model)
    trunk = model.image_encoder.trunk
    num_frames = len(frames)
    memory = ObjectMemory()
    with torch.no_grad():
        feats = model.encode_image(frames[0].to(device))
        step = track_step(model, 0, feats, memory, is_init_cond_frame=True,
                          points=centre_click(model.image_size, device), num_frames=num_frames,
                          return_token_attention=True)
        memory.cond[0] = step.entry
    evidence = RouterEvidence.from_outputs([step])
    losses, fractions = [], []
    for t in range(1, num_frames):
        image = frames[t].to(device)
        selection = route_windows(grid, evidence, router)
        with torch.no_grad():  # the blocks before the routed span are computed once, for both encodings
            prefix = trunk_prefix(trunk, image)
            feats = features_from_trunk(model, dense_trunk_from(trunk, prefix))  # = model.encode_image(image)
            target = condition_on_memory(model, t, False, feats, memory, num_frames, False)
        if not selection.is_full:
            with torch.set_grad_enabled(backward):
                routed = features_from_trunk(model, routed_trunk(trunk, None, selection, shortcut, prefix))
                pred = condition_on_memory(model, t, False, routed, memory, num_frames, False)
                loss = F.mse_loss(pred, target)
                if backward:
                    loss.backward()
            losses.append(loss.item())
            fractions.append(selection.fraction)
        with torch.no_grad():  # the dense tracking step, on the conditioned features computed above
            step = track_step(model, t, feats, memory, is_init_cond_frame=False, num_frames=num_frames,
                              return_token_attention=True, conditioned=target)
            memory.non_cond[t] = step.entry
        evidence = RouterEvidence.from_outputs([step])
    if backward and losses:
        for p in shortcut.parameters():
            if p.grad is not None:
                p.grad /= len(losses)
    if not losses:
        return StepResult(None, 0, 0.0)
    return StepResult(sum(losses) / len(losses), len(losses), sum(fractions) / len(fractions))


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _save_state(path: Path, settings: TrainSettings, step: int, shortcut: WindowShortcut,
                optimizer: torch.optim.Optimizer, history: list[dict], device: torch.device) -> None:
    payload = {"format": STATE_FORMAT, "fingerprint": settings.fingerprint(), "step": step,
               "shortcut": shortcut.state_dict(), "optimizer": optimizer.state_dict(),
               "rng": _rng_state(device), "history": history}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: an interruption leaves the previous state intact
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_state(path: Path, settings: TrainSettings) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable state is the same problem for the user
        raise Effsam2Error(f"cannot read training state {path} ({type(err).__name__}); "
                           "delete it or pass --fresh to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise Effsam2Error(f"{path} is not a shortcut training state; delete it or pass --fresh")
    if payload["fingerprint"] != settings.fingerprint():
        differ = [k for k, v in settings.fingerprint().items() if payload["fingerprint"].get(k) != v]
        raise Effsam2Error(f"training state {path} was made with other settings ({', '.join(differ)} differ); "
                           "rerun with the same arguments to resume, or pass --fresh to start over")
    return payload


def train_shortcut(model: SAM2Model, settings: TrainSettings, out: str | os.PathLike, *, resume: bool | None = None,
                   progress: bool = True, on_step: Callable[[int, StepResult], None] | None = None) -> list[dict]:
    """Train a shortcut for ``model`` (frozen) on ``settings.clips`` and write it to ``out``.

    ``resume``: None resumes when a training state for ``out`` exists, True requires one, False starts
    over (discarding any state). ``on_step(step, result)`` runs after each step (and its checkpoint).
    Returns the loss history, one dict per step.
    """
    device = model.device
    model.eval().requires_grad_(False)
    spath = state_path(out)
    if resume and not spath.exists():
        raise Effsam2Error(f"nothing to resume: no training state at {spath}")
    if resume is False and spath.exists():
        spath.unlink()
    torch.manual_seed(settings.seed)
    shortcut = new_shortcut(model.config).to(device).train()
    optimizer = torch.optim.AdamW(shortcut.parameters(), lr=settings.lr)
    step, history = 0, []
    if spath.exists():
        payload = _load_state(spath, settings)
        shortcut.load_state_dict(payload["shortcut"])
        optimizer.load_state_dict(payload["optimizer"])
        step, history = payload["step"], list(payload["history"])
        _set_rng_state(payload["rng"], device)
        if progress:
            tqdm.write(f"resuming from step {step} of {settings.total_steps} ({spath})")
    extra = {"image_size": str(settings.image_size), "total_steps": str(settings.total_steps)}
    bar = tqdm(total=settings.total_steps, initial=step, disable=not progress, desc="train-shortcut", unit="clip")
    try:
        while step < settings.total_steps:
            clip = settings.clips[step % len(settings.clips)]
            frames = load_clip(clip, settings.image_size)
            optimizer.zero_grad(set_to_none=True)
            result = clip_losses(model, shortcut, frames, settings.router, backward=True)
            if result.routed_frames:
                optimizer.step()
            step += 1
            history.append({"step": step, "clip": clip.describe(), **asdict(result)})
            if step % settings.save_every == 0 or step == settings.total_steps:
                save_shortcut(shortcut, out, model.config, {**extra, "steps_done": str(step)})
                _save_state(spath, settings, step, shortcut, optimizer, history, device)
            bar.update(1)
            loss = "n/a" if result.loss is None else f"{result.loss:.4g}"
            bar.set_postfix(loss=loss, windows=f"{result.window_fraction:.0%}")
            if on_step is not None:
                on_step(step, result)
    finally:
        bar.close()
    spath.unlink(missing_ok=True)  # completed: the output holds the result
    return history


def mean_loss(history: list[dict]) -> float:
    losses = [h["loss"] for h in history if h["loss"] is not None]
    return sum(losses) / len(losses) if losses else math.nan
