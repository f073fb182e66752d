"""`probe`: propagate's per-layer diagnosis on any `torch.nn.Module`, through hooks.

A forward hook on every probed module measures its output as it is produced; a tensor hook
on that output measures ∂L/∂output as the backward pass reaches it. The loss is propagate's,
L = Σ g ⊙ y for a unit-Gaussian cotangent g on the model's output y, and the inputs and g
come from the seed's `inputs` and `cotangent` streams exactly as propagate draws them, so an
`nn.Sequential` of Linear and ReLU holding a stack's weights gives propagate's numbers: a
Linear row's act_* and grad_var are propagate's preact_* and grad_var (δ = ∂L/∂h), the
following ReLU row's act_*, dead_frac, effective_rank and input_cosine are propagate's.

The output y is the model's tensor, or the one named by `output` in a dict/ModelOutput (a key)
or tuple (an index); by default a ModelOutput's `logits`, else its first floating tensor that
is not a `loss`. When the last weighted module (the head) starts with all-zero weights — a
design (ViT's and Mixer's zero-initialised heads): it outputs 0 and passes no gradient until
it moves — a second unit-Gaussian cotangent is backpropagated from the head's input, so the
trunk's gradients are those it will get once the head moves, and the verdict is read up to
the head.

Statistics are initcli's own (`initcli.stats`) on numpy views of the tensors:
- act_mean, act_var, grad_var, weight_grad_var: over every entry (batch, units, and for conv
  outputs channels and positions).
- weight_std: the standard deviation of a weight matrix or kernel; for a scale vector (the
  weight of a LayerNorm, BatchNorm or RMSNorm) its mean instead, the scale it multiplies by.
- effective_rank, input_cosine: between the inputs of the batch, each input's whole output
  flattened to one vector.
- channel_mean_sq, channel_var (Brock et al. 2021, signal-propagation plots): the mean over
  channels of the squared channel mean and of the channel variance, each taken over batch
  and positions. The channel axis comes from the module's type: dim 1 for convolutions,
  BatchNorm, GroupNorm, pooling and `…2d`-style modules; the last dim for Linear, LayerNorm,
  Embedding and attention; other modules (activations, blocks) take the layout of the last
  typed module whose output had as many dimensions (at first: last for token inputs, else 1).
- dead_frac: share of channels (units) whose output is exactly 0 for every input and position.
- saturated_frac: share of outputs in the flat part of a Tanh or Sigmoid (initcli's
  thresholds); 0 for the other activations initcli knows, nan (null) for other modules.

Rows are the modules in execution order (a module called twice gives two rows, the second
named `name#2`): leaves, modules holding parameters of their own, repeated blocks and
residual branches. Repeated blocks are the containers whose names differ only by an index
(`blocks.3`, `layer1.0`/`layer2.1`, `h.11`, `encoder_layer_5`; the outermost such family,
and not a family of stages holding another): their outputs are the residual stream, which the
verdict judges; a model without them is judged over its weighted modules (those holding a
weight matrix or kernel). A module is a residual branch when its attribute name is `branch`
or `residual` (say `self.branch = nn.Sequential(…)`), or when it carries
`initcli_branch = True`; its row has `branch_var`, the variance of what the branch adds to
the stream before the sum.

Modes: by default normalisation layers run on batch statistics (BatchNorm in train mode, as
at the first training step) and everything else in eval mode (dropout and stochastic depth
off); `train_mode=False` runs the whole model in eval mode (running statistics).

The user's model is never modified: hooks are removed in `finally`, the training flags and
every buffer (BatchNorm's running statistics, a counter the forward replaces or bumps in
place) are put back, torch's random state is restored, weight gradients come from
`torch.autograd.grad`, which leaves `.grad` alone, and `--reinit` works on a
`copy.deepcopy`.

The parts: `loading` (the user's callable, its seeded call, the inputs), `modules` (what a
module is to probe: its row, weight, kind and layout; the output to backpropagate from; the
model's mode and buffers), `recording` (the hooks, the statistics and the rows), `reinit`
(--reinit's copies), `verdict` (the verdict and compare's summary row), `records` (the
results) and `run` (the command's whole run). Every name is given here too.
"""

from __future__ import annotations

from .loading import (
    MAX_BATCH,
    MAX_SHAPE_ELEMENTS,
    build_model,
    check_input_options,
    draw_inputs,
    load_callable,
    load_model,
    one_line,
    parse_kwargs,
    seeded,
)
from .modules import (
    BRANCH_ATTRIBUTE,
    BRANCH_NAMES,
    check_real,
    first_tensor,
    pick_output,
    preserved,
    repeated_blocks,
    set_mode,
)
from .recording import estimate_bytes, probe
from .records import COMPARE_PROBE_COLUMNS, PROBE_COLUMNS, ModuleStats, ProbeComparison, ProbeResult
from .reinit import reinit_copy, weight_plan
from .run import run_probe
from .verdict import judge, summary_row

__all__ = [
    "BRANCH_ATTRIBUTE", "BRANCH_NAMES", "COMPARE_PROBE_COLUMNS", "MAX_BATCH", "MAX_SHAPE_ELEMENTS", "PROBE_COLUMNS",
    "ModuleStats", "ProbeComparison", "ProbeResult", "build_model", "check_input_options", "check_real",
    "draw_inputs", "estimate_bytes", "first_tensor", "judge", "load_callable", "load_model", "one_line",
    "parse_kwargs", "pick_output", "preserved", "probe", "reinit_copy", "repeated_blocks", "run_probe", "seeded",
    "set_mode", "summary_row", "weight_plan",
]
