"""Transformer stacks (`propagate --arch transformer`, `jacobian --arch transformer`): the
public names of the transformer engine, whose kernels live in
`initcli.engines.transformer.kernels` and whose statistics and runs in
`initcli.engines.transformer.runs` (see those modules for the model and its theory)."""

from .engines.transformer.kernels import *  # noqa: F403
from .engines.transformer.runs import *  # noqa: F403
