"""``effsam2 app``: a local web page to click on objects, track them and download their masks.

    effsam2 app                      # the default model, the sample clip preloaded, http://127.0.0.1:7860
    effsam2 app --model efficienttam_s_1 --checkpoint efficienttam_s_1.pt --port 8000

Needs the ``[app]`` extra (gradio): pip install "effsam2[app]".
"""

from __future__ import annotations

import argparse
import sys

from effsam2.cli.model_args import add_model_options
from effsam2.errors import Effsam2Error

DEFAULT_PORT = 7860


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("app", help="a local web app: click on objects, track them, download the masks",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--max-upload-mb", type=float, default=200, help="largest video upload in MB (default 200)")
    p.add_argument("--max-video-frames", type=int, default=3000,
                   help="longest video a session may open, in frames (default 3000)")
    p.add_argument("--idle-minutes", type=float, default=30,
                   help="a session's state and files are freed after this long without use (default 30)")
    p.add_argument("--no-sample", action="store_true", help="do not preload the bundled sample clip")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise Effsam2Error('effsam2 app needs gradio: pip install "effsam2[app]"') from None
    from effsam2.app.page import AppPage, page_css
    from effsam2.cli.demo import SAMPLE_VIDEO
    from effsam2.cli.model_args import build_model_from_args, check_model_args, describe_dtype
    from effsam2.predictor.video import VideoPredictor

    if not 0 < args.port < 65536:
        raise Effsam2Error(f"--port must be 1-65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_video_frames < 1 or args.idle_minutes <= 0:
        raise Effsam2Error("--max-upload-mb, --max-video-frames and --idle-minutes must be positive")
    config = check_model_args(args)
    predictor = VideoPredictor(build_model_from_args(args, "app"))
    page = AppPage(predictor, sample=None if args.no_sample else SAMPLE_VIDEO,
                   title=f"effsam2: {config.name}", max_upload_bytes=int(args.max_upload_mb * 2**20),
                   max_video_frames=args.max_video_frames, idle_seconds=args.idle_minutes * 60)
    print(f"effsam2 app: {config.name} on {args.device}, {describe_dtype(args, config)}; open http://{args.host}:{args.port} (Ctrl-C stops)",
          file=sys.stderr)
    try:
        page.build().launch(server_name=args.host, server_port=args.port,
                            max_file_size=int(args.max_upload_mb * 2**20), ssr_mode=False, css=page_css(),
                            quiet=True, footer_links=[])
    finally:
        page.end_all()
    return 0
