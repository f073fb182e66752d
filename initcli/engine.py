"""Linear stacks (`propagate`, the MLP engine): the public names of the MLP engine's kernels,
which live in `initcli.engines.mlp.kernels` (see there for the layers and their notation)."""

from .engines.mlp.kernels import *  # noqa: F403
