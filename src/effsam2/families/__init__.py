"""The built-in model families; importing this package registers them (see ``effsam2.registry``)."""

from effsam2.families import efficienttam, effsam2_lite, sam2_hiera  # noqa: F401
