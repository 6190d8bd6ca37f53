"""``effsam2 train``'s loop: SAM 2's video training recipe on DAVIS-style folders, resumable bit for bit.

Each step draws B clips (``clip_sampler``) with a generator seeded by (seed, step), so the data position
is the step number itself and a resumed run sees the same clips; torch's RNG is reseeded the same way.
The clips can be drawn ahead in worker processes (``train.prefetch``, ``--workers``), with the same result,
and a run can end at a deadline (``--max-minutes``), saved, to be resumed.
AdamW with linear warm-up and a cosine decay to a tenth, weight decay off for biases and norms, gradient
clipping; parameters whose ``requires_grad`` is off (a frozen trunk) are not trained. bf16 autocast on
CUDA and on CPUs with native bf16 (``--dtype``).

The run folder holds: ``last.safetensors`` (the trained weights, as ``build_model`` loads them),
``best.safetensors`` (best held-out validation J so far), ``train-state.pt`` (optimizer, step, history),
``loss.csv`` and ``loss.png``, ``settings.json``. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from effsam2.build import trained_state_dict
from effsam2.checkpoint import save_state_dict
from effsam2.dtypes import autocast
from effsam2.errors import Effsam2Error
from effsam2.io.atomic import atomic_path, atomic_write
from effsam2.modeling.sam2_model import SAM2Model
from effsam2.train.adapt import trunk_tail
from effsam2.train.clip_sampler import ClipSettings
from effsam2.train.prefetch import ClipPrefetcher, DrawnStep, draw_step
from effsam2.train.prompts import PromptSettings
from effsam2.train.validate import validate
from effsam2.train.vos_data import TrainVideo
from effsam2.train.vos_step import clip_loss, normalise

STATE_FORMAT = "effsam2-train-state-v1"
CSV_COLUMNS = ("step", "loss", "focal", "dice", "iou", "score", "train_iou", "lr", "val_j", "memory",
               "val_prompt_agreement")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a run; all of it but ``steps`` must match to resume."""

    model: str
    image_size: int
    data: str
    train_sequences: tuple[str, ...]
    val_sequences: tuple[str, ...]
    steps: int
    batch_size: int = 4
    lr: float = 3e-4
    trunk_lr: float = 0.0  # 0: the image trunk is frozen
    trunk_blocks: int | None = None  # with trunk_lr > 0: train its last N blocks (None: the whole trunk)
    memory_mask_loss: float = 0.0  # weight of losses.memory_mask_loss (0: SAM 2's losses only)
    weight_decay: float = 0.05
    warmup: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    dtype: str = "fp32"
    val_every: int = 100
    val_frames: int = 40
    clips: ClipSettings = field(default_factory=ClipSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)

    def fingerprint(self) -> dict:
        d = asdict(self)
        d.pop("steps")
        return json.loads(json.dumps(d))  # tuples -> lists, as read back from JSON


def lr_at(step: int, s: TrainSettings) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``lr / 10`` at the last step."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(s.steps - s.warmup, 1)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


TRUNK_PREFIX = "image_encoder.trunk."


def trains_trunk(s: TrainSettings) -> bool:
    return s.trunk_lr > 0


def make_optimizer(model: SAM2Model, s: TrainSettings) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight decay off for biases and norms; the image trunk frozen
    (``trunk_lr`` 0) or, at ``trunk_lr`` (same schedule, scaled), the whole trunk (``trunk_blocks`` None)
    or only its last ``trunk_blocks`` blocks, in a group of their own."""
    trunk_module = model.image_encoder.trunk
    if not trains_trunk(s):
        trunk_module.requires_grad_(False)
    elif s.trunk_blocks is not None:
        trunk_module.requires_grad_(False)
        for block in trunk_tail(model, s.trunk_blocks):
            block.requires_grad_(True)
    else:
        trunk_module.requires_grad_(True)
    decay, no_decay, trunk = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(TRUNK_PREFIX):
            trunk.append(p)
        else:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if trunk:
        groups.append({"params": trunk, "weight_decay": s.weight_decay, "trunk": True})
    return torch.optim.AdamW(groups, lr=s.lr)


def train_step(model: SAM2Model, optimizer: torch.optim.Optimizer, videos: list[TrainVideo], step: int,
               s: TrainSettings, drawn: DrawnStep | None = None) -> dict[str, float]:
    """One optimisation step on B clips drawn for ``step`` (here, or ahead by a :class:`ClipPrefetcher`:
    ``drawn``); returns the logged numbers."""
    if drawn is None:
        drawn = draw_step(videos, step, s.seed, s.batch_size, s.clips)
    rng = drawn.generator()
    device = model.device
    frames, masks = drawn.frames.to(device), drawn.masks.to(device)
    lr = lr_at(step, s)
    for group in optimizer.param_groups:
        group["lr"] = lr * s.trunk_lr / s.lr if group.get("trunk") else lr
    model.train()
    with autocast(device, s.dtype):
        loss = clip_loss(model, rng, normalise(frames), masks, s.prompts, s.memory_mask_loss)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
    optimizer.step()
    return {"step": step, "loss": float(loss.total.detach()), **loss.terms, "train_iou": loss.mean_iou, "lr": lr}


def state_file(out_dir: Path) -> Path:
    return out_dir / "train-state.pt"


def save_run(model: SAM2Model, optimizer, s: TrainSettings, out_dir: Path, next_step: int, history: list[dict],
             best: float | None) -> None:
    """Weights first, then the state that points past them: a crash between the two loses nothing."""
    weights = trained_state_dict(model, with_base=trains_trunk(s))
    meta = {"model": s.model, "image_size": str(s.image_size), "step": str(next_step)}
    save_state_dict(weights, out_dir / "last.safetensors", metadata=meta)
    state = {"format": STATE_FORMAT, "settings": s.fingerprint(), "next_step": next_step,
             "model": weights, "optimizer": optimizer.state_dict(), "history": history, "best_val_j": best}
    with atomic_path(state_file(out_dir)) as tmp:
        torch.save(state, tmp)
    write_curve(history, out_dir)


def load_run(model: SAM2Model, optimizer, s: TrainSettings, out_dir: Path) -> tuple[int, list[dict], float | None]:
    try:
        state = torch.load(state_file(out_dir), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable state is the same problem for the user
        raise Effsam2Error(f"cannot resume: {state_file(out_dir)} is unreadable ({type(err).__name__})") from None
    if state.get("format") != STATE_FORMAT:
        raise Effsam2Error(f"cannot resume: {state_file(out_dir)} is not an effsam2 train state")
    if state["settings"] != s.fingerprint():
        changed = sorted(k for k in s.fingerprint() if state["settings"].get(k) != s.fingerprint()[k])
        raise Effsam2Error(f"cannot resume {out_dir}: the run was started with other settings "
                           f"({', '.join(changed)}); use --fresh or another --out")
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    return state["next_step"], state["history"], state["best_val_j"]


def write_curve(history: list[dict], out_dir: Path) -> None:
    """loss.csv always; loss.png when matplotlib is installed (the [demo] extra)."""
    lines = [",".join(CSV_COLUMNS)]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" for c in CSV_COLUMNS))
    with atomic_write(out_dir / "loss.csv", "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    steps = [r["step"] for r in history]
    losses = np.array([r["loss"] for r in history])
    window = max(1, min(25, len(losses) // 10 or 1))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid") if len(losses) >= window else losses
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.3, label="loss")
    ax.plot(steps[window - 1:], smooth, label=f"loss ({window}-step mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    val = [(r["step"], r["val_j"]) for r in history if r.get("val_j") is not None]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), "o-", color="tab:green", label="held-out J")
        agreement = [(r["step"], r["val_prompt_agreement"]) for r in history if r.get("val_prompt_agreement") is not None]
        if agreement:
            ax2.plot(*zip(*agreement), "s--", color="tab:red", label="prompt agreement (mask vs square)")
        ax2.set_ylabel("held-out J, prompt agreement")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="lower left")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(out_dir / "loss.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def train(model: SAM2Model, videos: list[TrainVideo], val_videos: list[TrainVideo], s: TrainSettings,
          out_dir: str | os.PathLike, *, resume: bool | None = None, save_every: int = 25,
          progress: bool = True, workers: int = 0, deadline: float | None = None) -> list[dict]:
    """Run (or resume) ``s.steps`` steps; ``resume=None`` resumes when a state exists, False starts over.

    ``workers`` > 0 draws the clips ahead in that many processes (the same clips, see
    :mod:`effsam2.train.prefetch`). With a ``deadline`` (a ``time.monotonic()`` instant), the run ends after the
    first step that finishes past it and is saved; it is validated only where it would have been anyway, so the
    same call again resumes it to what an uninterrupted run gives (the learning-rate schedule is the one of
    ``s.steps`` either way)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    optimizer = make_optimizer(model, s)
    start, history, best = 0, [], None
    if resume is not False and state_file(out_dir).exists():
        start, history, best = load_run(model, optimizer, s, out_dir)
    elif resume:
        raise Effsam2Error(f"nothing to resume: no {state_file(out_dir)}")
    with atomic_write(out_dir / "settings.json", "w") as f:
        f.write(json.dumps(s.fingerprint() | {"steps": s.steps}, indent=1) + "\n")
    with contextlib.ExitStack() as stack:
        prefetcher = None
        if workers > 0 and start < s.steps:
            prefetcher = stack.enter_context(ClipPrefetcher(videos, start, s.steps, workers, s.seed, s.batch_size,
                                                            s.clips))
        bar = stack.enter_context(tqdm(range(start, s.steps), initial=start, total=s.steps, desc="train",
                                       disable=not progress, dynamic_ncols=True))
        running = None
        for step in bar:
            drawn = prefetcher.take(step) if prefetcher is not None else None
            row = train_step(model, optimizer, videos, step, s, drawn=drawn)
            running = row["loss"] if running is None else 0.95 * running + 0.05 * row["loss"]
            last = step + 1 == s.steps
            out_of_time = deadline is not None and time.monotonic() >= deadline
            best = _validate_if_due(model, val_videos, s, step, row, best, last, out_dir)
            history.append(row)
            bar.set_postfix(loss=f"{running:.3f}", iou=f"{row['train_iou']:.2f}",
                            val=f"{best:.3f}" if best is not None else "-")
            if (step + 1) % save_every == 0 or last or out_of_time:
                save_run(model, optimizer, s, out_dir, step + 1, history, best)
            if out_of_time:
                break
    return history


def _validate_if_due(model: SAM2Model, val_videos: list[TrainVideo], s: TrainSettings, step: int, row: dict,
                      best: float | None, last: bool, out_dir: Path) -> float | None:
    """Validate after every ``val_every`` steps and on the run's last step; the best J so far (its weights
    written as best.safetensors)."""
    if val_videos and ((step + 1) % s.val_every == 0 or last):
        checked = validate(model, val_videos, s.val_frames)
        row["val_j"], row["val_prompt_agreement"] = checked.j, checked.prompt_agreement
        if best is None or row["val_j"] > best:
            best = row["val_j"]
            save_state_dict(trained_state_dict(model, with_base=trains_trunk(s)), out_dir / "best.safetensors",
                            metadata={"model": s.model, "step": str(step + 1), "val_j": f"{best:.4f}"})
    return best
