"""``effsam2 models``: the named models, their family, input size and official checkpoint file."""

from __future__ import annotations

from effsam2.configs import MODELS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the model names effsam2 knows")
    p.set_defaults(func=run)


def run(args) -> int:
    width = max(len(name) for name in MODELS)
    print(f"{'model':<{width}}  {'family':<12}  {'size':>5}  {'memory attention':<16}  official checkpoint")
    for name, cfg in MODELS.items():
        print(f"{name:<{width}}  {cfg.family:<12}  {cfg.image_size:>5}  {cfg.memory_attention:<16}  "
              f"{cfg.checkpoint_file}")
    return 0
