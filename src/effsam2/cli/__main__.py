"""``python -m effsam2.cli``: the same as the ``effsam2`` command."""

from effsam2.cli import main

raise SystemExit(main())
