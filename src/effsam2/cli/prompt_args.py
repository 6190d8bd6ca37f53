"""Prompts given on the command line or in a JSON file, as plain data.

Command line: ``--obj-id K`` starts a new object; the ``--point``, ``--box``, ``--mask`` and ``--frame``
options after it belong to that object (before any ``--obj-id`` they belong to object 1).
JSON file: a list of ``{"obj_id": 1, "frame": 0, "points": [[x, y, label], ...], "box": [x0, y0, x1, y1],
"mask": "mask.png"}`` objects (a mask path is relative to the JSON file).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from effsam2.errors import PromptError


@dataclass
class ObjectPrompt:
    obj_id: int
    frame: int = 0
    points: list[tuple[float, float, int]] = field(default_factory=list)  # (x, y, label) in video pixels
    box: tuple[float, float, float, float] | None = None
    mask: Path | None = None

    def check(self) -> None:
        if not self.points and self.box is None and self.mask is None:
            raise PromptError(f"object {self.obj_id} has no prompt: give --point, --box or --mask")
        if self.mask is not None and (self.points or self.box is not None):
            raise PromptError(f"object {self.obj_id}: a mask prompt cannot be combined with points or a box")


def _numbers(text: str, what: str, counts: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise PromptError(f"{what} {text!r} must be comma-separated numbers") from None
    if len(values) not in counts:
        expected = " or ".join(str(c) for c in counts)
        raise PromptError(f"{what} {text!r} must have {expected} numbers")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``X,Y`` (a foreground click) or ``X,Y,LABEL`` with LABEL 1 (foreground) or 0 (background)."""
    return _point(_numbers(text, "--point", (2, 3)), f"--point {text!r}")


def _point(values: list[float], what: str) -> tuple[float, float, int]:
    label = 1 if len(values) == 2 else values[2]
    if label not in (0, 1):
        raise PromptError(f"{what}: the label must be 1 (foreground) or 0 (background)")
    return values[0], values[1], int(label)


def parse_box(text: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = _numbers(text, "--box", (4,))
    return x0, y0, x1, y1


class PromptAction(argparse.Action):
    """Collects --obj-id/--point/--box/--mask/--frame in command-line order into ``namespace.prompts``."""

    def __call__(self, parser, namespace, value, option_string=None):
        groups: list[ObjectPrompt] = getattr(namespace, "prompts", None) or []
        namespace.prompts = groups
        if self.dest == "obj_id":
            groups.append(ObjectPrompt(obj_id=_int(value, "--obj-id")))
            return
        if not groups:
            groups.append(ObjectPrompt(obj_id=1))
        current = groups[-1]
        if self.dest == "point":
            current.points.append(parse_point(value))
        elif self.dest == "box":
            if current.box is not None:
                raise PromptError(f"object {current.obj_id} has two --box options; start a new object with --obj-id")
            current.box = parse_box(value)
        elif self.dest == "mask":
            current.mask = Path(value)
        elif self.dest == "frame":
            current.frame = _int(value, "--frame")


def _int(text, what: str) -> int:
    """A command-line string or a JSON value as an integer >= 0 (1.7 or true are not integers)."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise PromptError(f"{what} must be an integer, got {text!r}")
    try:
        value = int(text)
    except ValueError:
        raise PromptError(f"{what} must be an integer, got {text!r}") from None
    if value < 0:
        raise PromptError(f"{what} must be >= 0, got {value}")
    return value


def add_prompt_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prompts (repeat --obj-id to prompt several objects)")
    group.add_argument("--obj-id", dest="obj_id", action=PromptAction, metavar="K",
                       help="start the prompts of object K (default: object 1)")
    group.add_argument("--point", dest="point", action=PromptAction, metavar="X,Y[,LABEL]",
                       help="a click in video pixels; LABEL 1 = object (default), 0 = background")
    group.add_argument("--box", dest="box", action=PromptAction, metavar="X0,Y0,X1,Y1", help="a box in pixels")
    group.add_argument("--mask", dest="mask", action=PromptAction, metavar="PNG",
                       help="a mask image of the frame's size (non-zero = object)")
    group.add_argument("--frame", dest="frame", action=PromptAction, metavar="N",
                       help="the frame these prompts are on (default 0)")
    group.add_argument("--prompts", dest="prompts_file", type=Path, metavar="JSON",
                       help="prompts for several objects in a JSON file")
    parser.set_defaults(prompts=None)


def load_prompt_file(path: Path) -> list[ObjectPrompt]:
    if not path.is_file():
        raise PromptError(f"prompt file not found: {path}")
    try:
        items = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PromptError(f"prompt file {path} is not valid JSON: {err}") from None
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise PromptError(f"prompt file {path} must hold a list of objects")
    return [_prompt_entry(item, f"prompt file {path}: entry {i}", path.parent) for i, item in enumerate(items)]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json_numbers(value, what: str, counts: tuple[int, ...], form: str) -> list[float]:
    """A JSON list of ``counts`` numbers, e.g. a box; ``PromptError`` naming the field otherwise."""
    if not isinstance(value, list) or len(value) not in counts or not all(_is_number(v) for v in value):
        raise PromptError(f"{what} must be a list {form} of numbers, got {json.dumps(value)}")
    return [float(v) for v in value]


def _prompt_entry(item, where: str, base: Path) -> ObjectPrompt:
    """One object of a prompt file, every field checked (the message names the entry and the field)."""
    if not isinstance(item, dict) or "obj_id" not in item:
        raise PromptError(f"{where} needs an 'obj_id'")
    unknown = set(item) - {"obj_id", "frame", "points", "box", "mask"}
    if unknown:
        raise PromptError(f"{where} has unknown keys {sorted(unknown)}")
    prompt = ObjectPrompt(obj_id=_int(item["obj_id"], f"{where}: 'obj_id'"),
                          frame=_int(item.get("frame", 0), f"{where}: 'frame'"))
    points = item.get("points")
    if points is not None:
        if not isinstance(points, list):
            raise PromptError(f"{where}: 'points' must be a list of [x, y] or [x, y, label], got {json.dumps(points)}")
        for j, p in enumerate(points):
            what = f"{where}: 'points' item {j}"
            prompt.points.append(_point(_json_numbers(p, what, (2, 3), "[x, y] or [x, y, label]"), what))
    if item.get("box") is not None:
        x0, y0, x1, y1 = _json_numbers(item["box"], f"{where}: 'box'", (4,), "[x0, y0, x1, y1]")
        prompt.box = (x0, y0, x1, y1)
    mask = item.get("mask")
    if mask is not None:
        if not isinstance(mask, str) or not mask:
            raise PromptError(f"{where}: 'mask' must be the path of a PNG file, got {json.dumps(mask)}")
        prompt.mask = Path(mask) if Path(mask).is_absolute() else base / mask
    return prompt


def collect_prompts(args: argparse.Namespace) -> list[ObjectPrompt]:
    """All prompts of a command line (options and/or a JSON file), checked for completeness."""
    prompts = list(args.prompts or [])
    if args.prompts_file is not None:
        prompts += load_prompt_file(args.prompts_file)
    if not prompts:
        raise PromptError("no prompt given: use --point X,Y, --box X0,Y0,X1,Y1, --mask PNG or --prompts JSON")
    seen = set()
    for p in prompts:
        p.check()
        key = (p.obj_id, p.frame)
        if key in seen:
            raise PromptError(f"object {p.obj_id} is prompted twice on frame {p.frame}; merge the prompts")
        seen.add(key)
    return prompts
