"""`initcli probe`'s whole run: the options checked, the model built and its inputs drawn, the
memory checked, and the model probed as built, per --reinit scheme, or fixed (--fix)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..checks import check_dtype, check_memory, check_seed
from ..errors import InitcliError
from ..schemes import check_weight_scale, make_init
from .loading import check_input_options, draw_inputs, load_model, one_line, parse_kwargs, require_torch, seeded
from .modules import check_real, preserved, set_mode
from .recording import estimate_bytes, probe
from .records import ProbeComparison
from .reinit import reinit_copy, weight_plan


def run_probe(target: str, *, kwargs: dict | str | None = None, input_shape: Sequence[int] | None = None,
              batch: int = 64, input_std: float = 1.0, tokens: int | None = None, seq_len: int | None = None,
              dtype: str = "float32", device: str = "cpu", seed: int = 0, train_mode: bool = True,
              modules: str | None = None, max_depth: int | None = None, reinit: Sequence[str] | None = None,
              activation: str = "relu", bias_std: float = 0.0, init_options: dict | None = None,
              output: str | None = None, progress: Callable[[int], None] | None = None,
              available: int | None = None, fix: Callable | None = None):
    """`initcli probe`: build the model from `target` (torch seeded with `seed` for the call),
    draw its inputs, check the memory, and probe it (once as built, or once per `reinit`
    scheme on re-initialised copies). Returns a ProbeResult, or a ProbeComparison for several
    schemes; with `fix` (probe --fix, `initcli.fixing`), what fix(model, args, params=…, **probe
    options) returns."""
    torch = require_torch("target")
    kwargs = parse_kwargs(kwargs) if isinstance(kwargs, str) or kwargs is None else kwargs
    np_dtype = check_dtype(dtype)
    seed = check_seed(seed)
    input_std = check_weight_scale("input_std", input_std)
    bias_std = check_weight_scale("bias_std", bias_std)
    _check_device_and_output(device, output, torch)
    inits = _reinit_inits(reinit, activation, init_options)
    model, example = load_model(target, kwargs, seed=seed)
    check_input_options(batch=batch, input_shape=input_shape, tokens=tokens, seq_len=seq_len, example=example)
    check_real(model, example if isinstance(example, tuple) else (example,))
    model = model.to(device=device, dtype=getattr(torch, np_dtype.name))
    if input_shape is not None or tokens is not None:
        x = draw_inputs(seed=seed, dtype=np_dtype, batch=batch, input_shape=input_shape, input_std=input_std,
                        tokens=tokens, seq_len=seq_len)
        args = (torch.from_numpy(x).to(device),)
        source = ({"tokens": tokens, "seq_len": seq_len} if tokens is not None
                  else {"input_shape": list(input_shape), "input_std": input_std})
        source["batch"] = batch
        input_param = "tokens" if tokens is not None else "input_shape"
    else:
        args = _example_args(example, target, device, np_dtype, torch)
        source, input_param = {"example_input": True}, None
    needed = _needed_bytes(model, args, seed, train_mode, input_param, torch)
    check_memory(needed * (2 if inits or fix else 1), available, dtype=np_dtype,
                 options=("--batch", "--input-shape", "--seq-len"))
    params = {"target": target, "kwargs": kwargs, **source, "dtype": np_dtype.name, "device": device}
    options = dict(seed=seed, train_mode=train_mode, modules=modules, max_depth=max_depth, output=output,
                   channels_last=tokens is not None if example is None else None, input_param=input_param,
                   progress=progress)
    if fix is not None:
        return fix(model, args, params=params, **options)
    if not inits:
        return probe(model, args, params=params, **options)
    return _probe_each(model, args, inits, params, options, seed=seed, bias_std=bias_std)


def _check_device_and_output(device: str, output: str | None, torch) -> None:
    if device not in ("cpu", "cuda"):
        raise InitcliError("device", f"must be cpu or cuda, got '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise InitcliError("device", "cuda: torch sees no CUDA device here")
    if output is not None and (not isinstance(output, str) or not output.strip()):
        raise InitcliError("output", f"must name one of the model's outputs, such as logits; got {output!r}")


def _reinit_inits(reinit: Sequence[str] | None, activation: str, init_options: dict | None) -> list:
    """The --reinit schemes as initialisers; lsuv is refused (it needs the model's own build)."""
    inits = []
    for name in reinit or ():
        init = make_init(name, activation=activation, **(init_options or {}))
        if init.scheme.kind == "lsuv":
            raise InitcliError("reinit", "lsuv rescales from data layer by layer; probe cannot re-run it on a "
                                         "model it does not build")
        inits.append(init)
    return inits


def _example_args(example, target: str, device: str, np_dtype, torch) -> tuple:
    """The callable's example input as a tuple on `device`, float tensors in `np_dtype`; one
    of 0 samples is refused."""
    args = example if isinstance(example, tuple) else (example,)
    first = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if first is not None and first.ndim and first.shape[0] == 0:
        raise InitcliError(None, f"the example input {target.rpartition(':')[2]} returned holds 0 samples "
                                 f"(shape {tuple(first.shape)}): initcli's statistics need at least one, 2 for "
                                 "the variances between inputs; return a batch, or give --input-shape")
    return tuple(a.to(device=device, dtype=getattr(torch, np_dtype.name))
                 if isinstance(a, torch.Tensor) and a.is_floating_point()
                 else (a.to(device) if isinstance(a, torch.Tensor) else a) for a in args)


def _needed_bytes(model, args: tuple, seed: int, train_mode: bool, input_param: str | None, torch) -> int:
    """`estimate_bytes` from a trial forward pass of at most 2 inputs; an input the model
    rejects is refused here, naming the module (a trial probe says which)."""
    first = args[0] if isinstance(args[0], torch.Tensor) else None
    full = first.shape[0] if first is not None and first.ndim else 1
    trial = min(2, full)
    trial_args = tuple(a[:trial] if isinstance(a, torch.Tensor) and a.ndim else a for a in args)
    with preserved(model), seeded(seed):
        set_mode(model, train_mode)
        try:
            return estimate_bytes(model, trial_args, full, trial)
        except Exception as exc:
            failed = exc
    probe(model, trial_args, seed=seed, train_mode=train_mode, input_param=input_param)  # names the module
    raise InitcliError(input_param, ("" if input_param is not None else "the callable's example input: ")
                       + f"the model rejected the input: {one_line(failed)}") from None


def _probe_each(model, args: tuple, inits: list, params: dict, options: dict, *, seed: int, bias_std: float):
    """One probe per --reinit scheme, each on its own re-initialised copy: the one ProbeResult,
    or a ProbeComparison of them."""
    _, untouched = weight_plan(model)
    runs = []
    for init in inits:
        copy_ = reinit_copy(model, init, seed=seed, bias_std=bias_std)
        scheme_params = {**params, "reinit": init.name, **init.params(), "bias_std": bias_std,
                         "reinit_untouched": untouched}
        runs.append(probe(copy_, args, params=scheme_params, **options))
        del copy_
    if len(runs) == 1:
        return runs[0]
    shared = {k: v for k, v in runs[0].params.items() if k not in ("reinit", "scheme", "mode", "distribution")}
    return ProbeComparison({**shared, "schemes": [r.params["reinit"] for r in runs]}, tuple(runs))
