"""The probe itself: forward hooks that measure every chosen module's output as it is produced,
tensor hooks that measure ∂L/∂output as the backward pass reaches it, and the rows and
verdict made of them (the package docstring says what is measured and how)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import numpy as np

from ..checks import check_seed
from ..engine import seed_streams
from ..errors import InitcliError
from ..schemes import gaussian
from ..stats import dead_fraction, effective_rank, mean_input_cosine, moments
from .loading import one_line, require_torch, seeded
from .modules import (
    check_real,
    first_tensor,
    is_norm,
    layout_of,
    numpy_dtype,
    pick_output,
    preserved,
    selected_modules,
    set_mode,
    weight_column,
    weight_of,
)
from .records import ModuleStats, ProbeResult
from .verdict import judge

# -- statistics of one module's output ------------------------------------------------------------

_SATURATING = {"Tanh": "tanh", "Sigmoid": "sigmoid"}
_NON_SATURATING = {"ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "ELU", "SELU", "Softplus", "Mish", "PReLU", "CELU"}


def _saturated_frac(type_name: str, y: np.ndarray) -> float:
    if type_name in _SATURATING:
        from ..activations import get_activation

        return float(np.count_nonzero(get_activation(_SATURATING[type_name]).saturated(y)) / y.size)
    return 0.0 if type_name in _NON_SATURATING else math.nan


def _channels(y: np.ndarray, axis: int) -> np.ndarray:
    """(rows, channels): every position of every input a row."""
    if y.ndim <= 1:
        return y.reshape(-1, 1)
    return np.moveaxis(y, axis, -1).reshape(-1, y.shape[axis])


def _forward_stats(y: np.ndarray, type_name: str, axis: int) -> dict:
    act_mean, act_var = moments(y)
    per_input = y.reshape(y.shape[0], -1)
    view = _channels(y, axis)
    channel_mean = view.mean(axis=0, dtype=np.float64)
    channel_var = view.var(axis=0, dtype=np.float64)
    return {"act_mean": act_mean, "act_var": act_var, "dead_frac": dead_fraction(np.abs(view)),
            "saturated_frac": _saturated_frac(type_name, y), "effective_rank": effective_rank(per_input),
            "input_cosine": mean_input_cosine(per_input),
            "channel_mean_sq": float(np.mean(channel_mean * channel_mean)), "channel_var": float(np.mean(channel_var))}


# -- the hooks ------------------------------------------------------------------------------------

_NO_OUTPUT_STATS = ("act_mean", "act_var", "dead_frac", "saturated_frac", "effective_rank", "input_cosine",
                    "channel_mean_sq", "channel_var")


class _Recorder:
    """The hooks of one probe run and what they gather: a record per call of a chosen module
    (its grad_var filled in by a tensor hook as the backward pass reaches it), the modules
    running now (a failure is blamed on the innermost), the layout of the last typed module
    per output ndim, and the last weighted module called (the head: module, its input, its
    row's label)."""

    def __init__(self, model, chosen: dict, channels_last: bool, progress: Callable[[int], None] | None,
                 torch) -> None:
        self.chosen, self.channels_last, self.progress, self.torch = chosen, channels_last, progress, torch
        self.names = {m: (n or "(model)") for n, m in model.named_modules()}
        self.records: list[dict] = []
        self.calls: dict = {}
        self.running: list[str] = []
        self.layouts: dict[int, str] = {}  # output ndim -> layout of the last typed module
        self.head: dict = {}
        self.handles: list = []  # forward hooks first, then the tensor hooks the forward pass adds

    @contextlib.contextmanager
    def attached(self, model):
        """Hooks on every module inside; every hook removed on the way out, whatever happens."""
        try:
            for module in model.modules():
                self.handles.append(module.register_forward_pre_hook(self.before))
                self.handles.append(module.register_forward_hook(self.after))
            yield self
        finally:
            for handle in self.handles:
                handle.remove()

    def before(self, module, _inputs) -> None:
        self.running.append(self.names.get(module, type(module).__name__))

    def after(self, module, inputs, output) -> None:
        torch = self.torch
        if self.running:
            self.running.pop()
        tensor = first_tensor(output, torch)
        layout = layout_of(module, torch)
        if layout is not None and tensor is not None:
            self.layouts[tensor.ndim] = layout
        weight = weight_of(module, torch)
        weighted = weight is not None and weight.ndim >= 2 and not is_norm(module, torch)
        if weighted:
            self.head.clear()
            self.head.update(module=module, input=first_tensor(inputs, torch))
        if module not in self.chosen:
            return
        label, branch, block = self.chosen[module]
        self.calls[module] = self.calls.get(module, 0) + 1
        if self.calls[module] > 1:
            label = f"{label}#{self.calls[module]}"
        if weighted:
            self.head["label"] = label
        self.records.append(self._record(module, label, branch, block, tensor, layout))
        if self.progress is not None:
            self.progress(1)

    def _record(self, module, label: str, branch: bool, block: bool, tensor, layout: str | None) -> dict:
        """One call's record: its forward statistics now, its grad_var when the backward pass comes."""
        type_name = type(module).__name__
        weight_std, kind = weight_column(module, self.torch)
        record = {"module": label, "type": type_name, "branch": branch, "grad_var": math.nan,
                  "weight_grad_var": math.nan, "owner": module, "weight_std": weight_std,
                  "kind": "block" if block else kind}
        if tensor is None or not tensor.is_floating_point() or tensor.ndim == 0:
            return record | {"output_shape": "-" if tensor is None else "x".join(map(str, tensor.shape)),
                             **{k: math.nan for k in _NO_OUTPUT_STATS}}
        y = tensor.detach()
        where = layout or self.layouts.get(y.ndim) or ("last" if self.channels_last else "first")
        axis = 1 if where == "first" and y.ndim >= 3 else y.ndim - 1
        record["output_shape"] = "x".join(map(str, y.shape))
        record["width"] = int(y.shape[axis]) if y.ndim >= 2 else 1
        record["size"] = int(y[0].numel()) if y.ndim >= 1 and y.shape[0] else 1
        with np.errstate(all="ignore"):
            record |= _forward_stats(y.cpu().numpy(), type_name, axis)
        if tensor.requires_grad:
            self.handles.append(tensor.register_hook(self._on_grad(record)))
        return record

    def _on_grad(self, record: dict) -> Callable:
        def on_grad(grad) -> None:
            with np.errstate(all="ignore"):
                record["grad_var"] = moments(grad.detach().cpu().numpy())[1]
            if self.progress is not None:
                self.progress(1)
        return on_grad

    def zero_head_input(self):
        """(label, input) of the head when its weights are all zero and its input carries a
        floating gradient, else None."""
        torch, head = self.torch, self.head
        head_weight = weight_of(head["module"], torch) if head else None
        head_input = head.get("input")
        if (head_weight is not None and not bool(torch.any(head_weight)) and isinstance(head_input, torch.Tensor)
                and head_input.requires_grad and head_input.is_floating_point()):
            return head.get("label", self.names[head["module"]]), head_input
        return None


# -- the probe ------------------------------------------------------------------------------------


def probe(model, inputs, *, seed: int = 0, train_mode: bool = True, modules: str | Sequence[str] | None = None,
          max_depth: int | None = None, channels_last: bool | None = None, output: str | None = None,
          params: dict | None = None, input_param: str | None = "inputs",
          progress: Callable[[int], None] | None = None) -> ProbeResult:
    """Run `inputs` (a tensor or array, or a tuple of them) through `model`, backpropagate a
    unit-Gaussian cotangent drawn from the seed's `cotangent` stream in the output's shape
    and dtype, and measure every probed module (see the package docstring). Normalisation
    layers run on batch statistics and the rest in eval mode unless `train_mode` is False
    (everything in eval mode); torch's generators are seeded with `seed` for the run; the
    model is left exactly as it was. `output` names the output to backpropagate from (see
    `pick_output`). `channels_last` (default: true for integer inputs) is the layout of
    outputs no module type decides. `input_param` is the option an input the model rejects is
    blamed on (None: the callable's example). `progress(1)` hears of each module measured,
    forward and backward."""
    torch = require_torch()
    seed = check_seed(seed)
    check_real(model, inputs if isinstance(inputs, tuple) else (inputs,))
    chosen = selected_modules(model, modules, max_depth)
    args, float_args = _prepared_args(model, inputs, input_param, torch)
    recorder = _Recorder(model, chosen, not float_args if channels_last is None else channels_last, progress, torch)
    with preserved(model), seeded(seed), recorder.attached(model):
        set_mode(model, train_mode)
        weights = [p for p in model.parameters() if p.requires_grad]
        returned = _forward(model, args, recorder.running, input_param, torch)
        out, output_label = pick_output(returned, output, torch)
        weight_grads, zero_head = _backward(out, recorder, weights, float_args, seed, torch)
        del returned, out
        recorder.head.clear()
    rows = _module_rows(recorder.records, weight_grads, torch)
    run_params = {"seed": seed, "train_mode": bool(train_mode), "output": output_label,
                  "modules": modules, "max_depth": max_depth, **(params or {})}
    if zero_head is not None:
        run_params["zero_head"] = zero_head
    dtype_name = next((str(a.dtype).removeprefix("torch.") for a in float_args), None) or next(
        (str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point()), "float32")
    verdict, reason, judged = judge(rows, zero_head=zero_head, dtype=dtype_name)
    return ProbeResult(run_params, rows, verdict, reason, judged)


def _prepared_args(model, inputs, input_param: str | None, torch) -> tuple[tuple, list]:
    """(the inputs as `_args` makes them, float ones detached and requiring a gradient; those
    float ones), refusing an input of 0 samples and a float dtype probe does not measure."""
    args = _args(model, inputs, torch)
    first_arg = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if first_arg is not None and first_arg.ndim and first_arg.shape[0] == 0:
        raise InitcliError(input_param, ("the callable's example input" if input_param is None else "the input")
                           + " holds 0 samples: its statistics need at least one (2 for variances between inputs)")
    float_ids = {id(a) for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()}
    args = tuple(a.detach().requires_grad_(True) if id(a) in float_ids else a for a in args)
    float_args = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
    for a in float_args:
        numpy_dtype(a.dtype)
    return args, float_args


def _args(model, inputs, torch) -> tuple:
    """The inputs as a tuple of tensors on the model's device, float ones in its dtype."""
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = first.device if first is not None else torch.device("cpu")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args)
    # float inputs in the model's dtype (a float64 numpy array into a float32 model)
    return tuple((a.to(device, first.dtype) if first is not None and a.is_floating_point() else a.to(device))
                 if isinstance(a, torch.Tensor) and not a.is_meta else a for a in args)


def _forward(model, args: tuple, running: list[str], input_param: str | None, torch):
    """The model's output for `args`; an input it refuses is one line naming the module that
    refused it (the innermost running) and why."""
    try:
        return model(*args)
    except Exception as exc:  # the user's model refuses the input: say which module and why
        where = running[-1] if running else "(model)"
        shape = ", ".join(",".join(map(str, a.shape[1:])) if isinstance(a, torch.Tensor)
                          else type(a).__name__ for a in args)
        blamed = "" if input_param is not None else "the callable's example input: "
        raise InitcliError(input_param, f"{blamed}module '{where}' rejected inputs of shape {shape or '()'}: "
                                        f"{one_line(exc)}") from None


def _backward(out, recorder: _Recorder, weights: list, float_args: list, seed: int, torch) -> tuple[dict, str | None]:
    """({id(weight): its gradient}, label of a zero-initialised head or None): a unit-Gaussian
    cotangent from the seed's `cotangent` stream on the output, and, under a head that starts
    at zero, a second one on the head's input, so the trunk's gradient is the one that flows
    once the head moves. The tensor hooks hear of every output's gradient on the way."""
    cotangent_stream = seed_streams(seed)["cotangent"]
    targets, cotangents = [out], [gaussian(cotangent_stream, tuple(out.shape), numpy_dtype(out.dtype))]
    zero_head = recorder.zero_head_input()
    label = None
    if zero_head is not None:
        label, head_input = zero_head
        targets.append(head_input)
        cotangents.append(gaussian(cotangent_stream, tuple(head_input.shape), numpy_dtype(head_input.dtype)))
    wanted = weights + float_args
    weight_grads = {}
    if out.requires_grad and wanted:
        grads = torch.autograd.grad(targets, wanted, [torch.from_numpy(c).to(out.device) for c in cotangents],
                                    allow_unused=True)
        weight_grads = {id(p): g for p, g in zip(weights, grads)}
    return weight_grads, label


def _module_rows(records: list[dict], weight_grads: dict, torch) -> tuple[ModuleStats, ...]:
    """The records as rows, each with its weight's gradient variance (when it has a weight)
    and, on a residual branch, branch_var."""
    rows = []
    with np.errstate(all="ignore"):
        for record in records:
            owner = record.pop("owner")
            weight = weight_of(owner, torch)
            grad = weight_grads.get(id(weight)) if weight is not None else None
            if grad is not None:
                record["weight_grad_var"] = moments(grad.detach().cpu().numpy())[1]
            branch = record.pop("branch")
            rows.append(ModuleStats(**record, branch_var=record["act_var"] if branch else None))
    return tuple(rows)


# -- memory ---------------------------------------------------------------------------------------


def estimate_bytes(model, trial_args: tuple, batch: int, trial_batch: int) -> int:
    """Parameters (and their gradients), plus every module's output for a batch scaled up from
    a forward pass of `trial_batch` inputs: autograd keeps about one tensor per module output
    for the backward pass and the gradient arrives beside it; the statistics add a float64
    copy of the largest output."""
    torch = require_torch()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    sizes: list[int] = []

    def count(_m, _i, output):
        tensor = first_tensor(output, torch)
        if tensor is not None:
            sizes.append(tensor.numel() * tensor.element_size())

    handles = []
    try:
        for module in model.modules():
            if next(module.children(), None) is None:
                handles.append(module.register_forward_hook(count))
        with torch.no_grad():
            model(*trial_args)
    finally:
        for handle in handles:
            handle.remove()
    scale = batch / trial_batch
    kept = 2 * sum(sizes) * scale
    largest = max(sizes, default=0) * scale * 2  # a float64 copy of a float32 output
    return int(2 * params + kept + largest) + (64 << 20)

