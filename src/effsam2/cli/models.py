"""``effsam2 models``: the registered models, which one is the default, and where their weights come from."""

from __future__ import annotations

from effsam2.registry import DEFAULT_ALIAS, default_model, get_config, list_models, shipped_weights


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the model names effsam2 knows (* marks the default)")
    p.set_defaults(func=run)


def weights_column(name: str) -> str:
    """'shipped' when weights come with effsam2, else the official checkpoint file to pass with --checkpoint."""
    config = get_config(name)
    if shipped_weights(config) is not None:
        return "shipped (no --checkpoint needed)"
    return f"--checkpoint {config.checkpoint_file}"


def run(args) -> int:
    names = list_models()
    default = default_model()
    width = max(len(name) for name in names) + 2
    print(f"{'model':<{width}}  {'family':<12}  {'size':>5}  {'memory attention':<16}  weights")
    for name in names:
        cfg = get_config(name)
        label = f"{name} *" if name == default else name
        print(f"{label:<{width}}  {cfg.family:<12}  {cfg.image_size:>5}  {cfg.memory_attention:<16}  "
              f"{weights_column(name)}")
    print(f"* the default model ('{DEFAULT_ALIAS}' or no --model)")
    return 0
