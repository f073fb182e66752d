"""Convolution stacks (`propagate --arch conv`, `jacobian --arch conv`): the public names of
the conv engine, whose kernels live in `initcli.engines.conv.kernels` and whose runs in
`initcli.engines.conv.runs` (see those modules for the convolutions and their theory)."""

from .engines.conv.kernels import *  # noqa: F403
from .engines.conv.runs import *  # noqa: F403
