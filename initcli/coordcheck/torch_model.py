"""`coordcheck --module MODULE:CALLABLE --width-arg NAME` (torch extra): the coordinate check of
the user's own torch model, loaded and built as probe builds it, trained with torch's
optimizer, its leaf modules' and repeated blocks' mean |output| recorded by forward hooks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..checks import check_dtype, check_memory, positive_int
from ..engine import seed_streams
from ..errors import InitcliError, suggest
from ..schemes import gaussian
from ..training import ADAM_BETAS, ADAM_EPS, make_task
from .options import DEFAULT_WIDTHS, check_training, parse_sizes
from .slopes import DEFAULT_FLAT_TOL, CoordResult, CoordRow, group_slopes

PARAM_GROUPS_ATTRIBUTE = "initcli_param_groups"


def _torch():
    from ..optional import require

    return require("torch", "module", "coordcheck --module")


def _load_factory(target: str):
    """probe's loader (`initcli.probing.load_callable`), its refusals named --module."""
    from ..probing import load_callable

    try:
        return load_callable(target)
    except InitcliError as exc:
        if exc.param is not None:
            raise
        raise InitcliError("module", exc.message) from None


def _accepts(factory, name: str) -> bool:
    """Whether `factory(**{name: …})` binds: a parameter of that name, or **kwargs. A callable
    without a signature (some builtins) is given the benefit of the doubt."""
    import inspect

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return True
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(p.kind == inspect.Parameter.VAR_KEYWORD or (p.name == name and p.kind in kinds)
               for p in signature.parameters.values())


def _argument_names(factory) -> list[str]:
    import inspect

    try:
        return list(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return []


def _build(factory, target: str, call: dict, width_arg: str, user_kwargs: bool):
    """The model at one width: (module, example input or None), checked by probe's builder."""
    from ..probing import build_model

    name = target.rpartition(":")[2]
    return build_model(factory, call, name=name, call_text=f"{name}({width_arg}={call[width_arg]}, …)",
                       call_param="kwargs" if user_kwargs else "module", type_param="module")


def _param_groups(model, optimizer: str, lr: float, target: str) -> tuple[list, str]:
    """(what torch's optimizer is given, where it came from): the groups of the model's
    `initcli_param_groups(optimizer, lr)` method when it has one ("model") — how a model states
    per-layer learning rates such as µP's, which a plain module cannot express; mup's groups
    ("mup") when mup's `set_base_shapes` gave every parameter an `infshape`; else every
    parameter at `lr` ("one")."""
    from ..probing import one_line

    method = getattr(model, PARAM_GROUPS_ATTRIBUTE, None)
    if method is None:
        params = list(model.parameters())
        if params and all(hasattr(p, "infshape") for p in params):
            return _mup_groups(params, optimizer, lr, target), "mup"
        return params, "one"
    try:
        groups = list(method(optimizer, lr))
    except Exception as exc:  # the user's code
        raise InitcliError("module", f"{target}'s model: {PARAM_GROUPS_ATTRIBUTE}('{optimizer}', {lr:g}) failed: "
                                     f"{one_line(exc)}") from None
    return groups, "model"


def _mup_groups(params, optimizer: str, lr: float, target: str) -> list[dict]:
    """The learning rates mup's MuAdam and MuSGD give parameters carrying mup's `infshape`
    (Yang et al. 2022, Table 3; mup's optim.py): Adam divides a matrix-like parameter's (two
    infinite dimensions) rate by its width multiplier; SGD multiplies a vector-like one's (one
    infinite dimension) by its width multiplier and divides a matrix-like one's by its fan-in
    over fan-out multiplier; the rest keep `lr`."""
    from ..probing import one_line

    rates: dict[float, list] = {}
    try:
        for p in params:
            shape = p.infshape
            infinite = shape.ninf()
            if infinite > 2:
                raise InitcliError("module", f"{target}'s model: mup states no learning rate for a parameter with "
                                             f"{infinite} infinite dimensions")
            if optimizer == "adam":
                factor = 1 / shape.width_mult() if infinite == 2 else 1.0
            else:
                factor = (shape.width_mult() if infinite == 1
                          else 1 / shape.fanin_fanout_mult_ratio() if infinite == 2 else 1.0)
            rates.setdefault(float(factor), []).append(p)
    except InitcliError:
        raise
    except Exception as exc:  # an infshape that is not mup's
        raise InitcliError("module", f"{target}'s model: its parameters' infshape (mup's set_base_shapes) cannot "
                                     f"be read: {one_line(exc)}") from None
    return [{"params": group, "lr": lr * factor} for factor, group in rates.items()]


def _meta_parameters(factory, call: dict, torch) -> int | None:
    """The number of parameter values the callable's model holds, built on the meta device
    (shapes only); None when the callable cannot be built there (it computes with values)."""
    try:
        with torch.device("meta"):
            built = factory(**call)
        model = built[0] if isinstance(built, tuple) and len(built) == 2 else built
        return sum(p.numel() for p in model.parameters())
    except Exception:  # the user's code on meta tensors: the real build will say what is wrong
        return None


def _leaf_names(model) -> dict:
    """{module: name} of the modules that get rows, in `named_modules` order: the leaves, and
    the repeated blocks (probe's `repeated_blocks`: their outputs are a transformer's or
    ResNet's residual stream); a model with no children is '(model)'."""
    from ..probing import repeated_blocks

    blocks = repeated_blocks(model)
    return {module: name or "(model)" for name, module in model.named_modules()
            if next(module.children(), None) is None or module in blocks}


def _as_args(inputs, torch, torch_dtype) -> tuple:
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    return tuple(a.to(dtype=torch_dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


def _targets(shape: tuple[int, ...], seed: int, dtype: np.dtype) -> tuple[np.ndarray, str]:
    """The fixed regression targets: the built-in path's (the regression task's y for this seed,
    every output column fitting it) when the output is (batch, outputs), else unit Gaussians of
    the output's shape from the seed's cotangent stream."""
    if len(shape) == 2 and shape[0] >= 2:
        task = make_task("regression", shape[0], rng=seed_streams(seed)["inputs"])
        return np.tile(task.y, (1, shape[1])).astype(dtype), "task"
    return gaussian(seed_streams(seed)["cotangent"], shape, dtype), "gaussian"


def _run_module(factory, target: str, *, width: int, width_arg: str, kwargs: dict, seed: int, data_seed: int,
                inputs, optimizer: str, lr: float, steps: int, torch, torch_dtype, np_dtype) -> tuple[list, dict]:
    """One (width, seed) run of the user's model: rows for steps 0…K, and what was used."""
    from ..probing import first_tensor

    torch.manual_seed(seed)  # the weights (and any dropout) are the point's, whatever ran before
    model, example = _build(factory, target, {**kwargs, width_arg: width}, width_arg, bool(kwargs))
    model = model.to(dtype=torch_dtype)
    model.train()
    args = _as_args(inputs if inputs is not None else example, torch, torch_dtype)
    names = _leaf_names(model)
    seen: list[tuple[str, float]] = []
    calls: dict[str, int] = {}

    def record(module, _inputs, output):
        tensor = first_tensor(output, torch)
        if tensor is None or not tensor.is_floating_point():
            return
        label = names[module]
        calls[label] = calls.get(label, 0) + 1
        if calls[label] > 1:
            label = f"{label}#{calls[label]}"  # a module called twice: two rows, as probe names them
        seen.append((label, float(tensor.detach().abs().mean(dtype=torch.float64))))

    groups, source = _param_groups(model, optimizer, lr, target)
    opt = _torch_optimizer(groups, optimizer, lr, target, torch)
    handles = [module.register_forward_hook(record) for module in names]
    rows: list[CoordRow] = []
    target_tensor, used = None, {"param_groups": source}
    try:
        for step in range(steps + 1):
            seen.clear()
            calls.clear()
            training = step < steps
            with torch.set_grad_enabled(training):
                output = _module_output(model, args, step, target, torch)
            rows += [CoordRow(name, step, width, None, seed, l1) for name, l1 in seen]
            if not training:
                break
            if target_tensor is None:
                drawn, used["targets"] = _targets(tuple(output.shape), data_seed, np_dtype)
                target_tensor = torch.from_numpy(drawn).to(dtype=output.dtype)
            _train_step(opt, output, target_tensor, step, target, torch)
    finally:
        for handle in handles:
            handle.remove()
    return rows, used


def _torch_optimizer(groups: list, optimizer: str, lr: float, target: str, torch):
    """torch's Adam (mup's betas and eps) or SGD over the parameter groups."""
    from ..probing import one_line

    try:
        return (torch.optim.Adam(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS) if optimizer == "adam"
                else torch.optim.SGD(groups, lr=lr))
    except (ValueError, TypeError) as exc:  # no parameters, malformed groups
        raise InitcliError("module", f"cannot train {target}'s model with {optimizer}: {one_line(exc)}") from None


def _module_output(model, args: tuple, step: int, target: str, torch):
    """The model's floating output at `step`; the user's forward failing is one line (at step
    0 the input is blamed: the model rejected it)."""
    from ..probing import first_tensor, one_line

    try:
        output = first_tensor(model(*args), torch)
    except Exception as exc:  # the user's forward
        if step == 0:
            raise InitcliError("input_shape", f"the model rejected the input: {one_line(exc)}") from None
        raise InitcliError("module", f"{target}'s model failed at step {step}: {one_line(exc)}") from None
    if output is None or not output.is_floating_point():
        raise InitcliError("module", f"{target}'s model returned no floating-point tensor")
    return output


def _train_step(opt, output, target_tensor, step: int, target: str, torch) -> None:
    """One optimizer step on the mean squared error, the built-in path's loss."""
    from ..probing import one_line

    loss = torch.mean((output - target_tensor) ** 2)
    opt.zero_grad(set_to_none=True)
    if not loss.requires_grad:
        raise InitcliError("module", f"{target}'s model output does not depend on any trainable parameter")
    try:
        loss.backward()
        opt.step()
    except Exception as exc:  # the user's backward, or torch refusing a value
        raise InitcliError("module", f"training {target}'s model failed at step {step + 1}: "
                                     f"{one_line(exc)}") from None


def coordcheck_module(target: str, *, width_arg: str | None, kwargs: dict | str | None = None,
                      widths: Sequence[int] = DEFAULT_WIDTHS, steps: int = 3, optimizer: str = "adam",
                      lr: float | None = None, seeds: int = 3, seed: int = 0, batch: int = 64,
                      input_shape: Sequence[int] | None = None, input_std: float = 1.0, dtype: str = "float32",
                      flat_tol: float = DEFAULT_FLAT_TOL, progress: Callable[[int], None] | None = None,
                      available: int | None = None) -> CoordResult:
    """The coordinate check of the user's torch model: `target` is probe's MODULE:CALLABLE (or
    path/to/file.py:CALLABLE); at each width the callable is called with
    `{width_arg: width, **kwargs}` after `torch.manual_seed(point seed)`, and returns a
    torch.nn.Module (or (module, example_input)).

    The batch is fixed by `seed`: with `input_shape` None, the regression task's 2-feature
    inputs (`batch` of them, the built-in path's); with it, N(0, input_std²) inputs from the
    seed's inputs stream, as probe draws them; a returned example input otherwise. Targets: the
    task's y (every output column fitting it) when the output is (batch, outputs), unit
    Gaussians of the output's shape otherwise. Loss: mean squared error.

    Training is torch's Adam (betas 0.9, 0.999, eps 1e-8) or SGD (no momentum) at one learning
    rate `lr` for every parameter, unless the model has a method `initcli_param_groups(optimizer,
    lr)` returning torch parameter groups (how a model states µP's per-layer rates), or was
    built with mup's `set_base_shapes` (mup's MuAdam/MuSGD rates, `_mup_groups`); params'
    `param_groups` says which ("model", "mup", "one"). Every leaf module's and every repeated
    block's (the residual stream's) mean |output| (forward hooks, removed afterwards) is a row
    before each step; the rows' depth is None and left out of the columns. Slopes as the
    built-in path's, with no predicted exponent."""
    torch = _torch()
    from ..probing import parse_kwargs

    kwargs = parse_kwargs(kwargs) if isinstance(kwargs, str) or kwargs is None else dict(kwargs)
    widths = _check_widths(width_arg, kwargs, widths)
    checked = check_training(steps=steps, optimizer=optimizer, lr=lr, seeds=seeds, seed=seed, batch=batch,
                             flat_tol=flat_tol)
    np_dtype = check_dtype(dtype)
    _check_step_size(checked["lr"], checked["optimizer"], np_dtype)
    if input_shape is not None:
        input_shape, input_std = _check_input_shape(input_shape, input_std, checked["batch"])
    factory = _load_factory(target)
    _check_width_arg(factory, target, width_arg)
    torch_dtype = getattr(torch, np_dtype.name)
    if input_shape is not None:
        from ..probing import draw_inputs

        inputs = torch.from_numpy(draw_inputs(seed=checked["seed"], dtype=np_dtype, batch=checked["batch"],
                                              input_shape=input_shape, input_std=input_std))
        source = {"inputs": "input_shape", "input_shape": list(input_shape), "input_std": input_std}
    else:
        inputs, source = None, {"inputs": "task"}
    steps, key, lr = checked["steps"], checked["optimizer"], checked["lr"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the built-in path: the numbers do not depend on the machine's cores
    try:
        inputs, source, full = _check_widest(factory, target, kwargs, width_arg, widths[-1], inputs, source,
                                             checked=checked, np_dtype=np_dtype, available=available, torch=torch)
        rows: list[CoordRow] = []
        used: dict = {}
        for width in widths:
            for i in range(checked["seeds"]):
                more, used = _run_module(factory, target, width=width, width_arg=width_arg, kwargs=kwargs,
                                         seed=checked["seed"] + i, data_seed=checked["seed"], inputs=inputs,
                                         optimizer=key, lr=lr, steps=steps, torch=torch, torch_dtype=torch_dtype,
                                         np_dtype=np_dtype)
                rows += more
                if progress is not None:
                    progress(1)
    finally:
        torch.set_num_threads(threads)
    order = {layer: i for i, layer in enumerate(dict.fromkeys(r.layer for r in rows))}
    slopes = group_slopes(rows, "width", checked["flat_tol"], lambda layer, step: None, order.__getitem__)
    params = {"module": target, "width_arg": width_arg, "kwargs": kwargs, "widths": list(widths), "steps": steps,
              "optimizer": key, "lr": lr, "seeds": checked["seeds"], "seed": checked["seed"],
              "batch": int(full), **source, "targets": used.get("targets", "none"),
              "param_groups": used.get("param_groups", "one"), "flat_tol": checked["flat_tol"],
              "dtype": np_dtype.name}
    return CoordResult(params, tuple(rows), tuple(slopes))


def _check_widths(width_arg: str | None, kwargs: dict, widths: Sequence[int]) -> tuple[int, ...]:
    """--widths checked, for a --width-arg that names an argument --kwargs does not set."""
    if width_arg is None or not isinstance(width_arg, str) or not width_arg.isidentifier():
        raise InitcliError("width_arg", f"must name the callable's width argument, such as 'width'; got {width_arg!r}")
    if width_arg in kwargs:
        raise InitcliError("kwargs", f"sets '{width_arg}', which --width-arg varies over --widths")
    widths = parse_sizes(widths, "widths")
    if len(widths) < 2:
        raise InitcliError("widths", "needs at least two widths to fit a slope")
    return widths


def _check_step_size(lr: float, optimizer: str, np_dtype: np.dtype) -> None:
    """torch converts the step size to the parameters' dtype and refuses one past its range: SGD's
    lr, Adam's lr/(1 − β1^t), largest at t = 1 (Kingma & Ba 2015, Algorithm 1)."""
    largest = float(np.finfo(np_dtype).max) * (1 - ADAM_BETAS[0] if optimizer == "adam" else 1)
    if lr > largest:
        raise InitcliError("lr", f"must be at most {largest:.3g} with {optimizer} in {np_dtype.name}: "
                                 f"torch cannot hold a larger step; got {lr:g}")


def _check_input_shape(input_shape: Sequence[int], input_std: float, batch: int) -> tuple[tuple[int, ...], float]:
    """(--input-shape, --input-std) checked: positive sizes, and a batch of them that a run can hold."""
    from ..probing import MAX_SHAPE_ELEMENTS
    from ..schemes import check_weight_scale

    input_std = check_weight_scale("input_std", input_std)
    input_shape = tuple(positive_int("input_shape", d, MAX_SHAPE_ELEMENTS) for d in input_shape)
    if not input_shape:
        raise InitcliError("input_shape", "needs at least one size, such as 784 or 3,32,32")
    if batch * math.prod(input_shape) > MAX_SHAPE_ELEMENTS:
        raise InitcliError("input_shape", f"--batch × --input-shape is more than {MAX_SHAPE_ELEMENTS} values")
    return input_shape, input_std


def _check_width_arg(factory, target: str, width_arg: str) -> None:
    if not _accepts(factory, width_arg):
        names = _argument_names(factory)
        raise InitcliError("width_arg", f"{target.rpartition(':')[2]} takes no argument '{width_arg}'"
                                        f"{suggest(width_arg, names)}; its arguments: {', '.join(names) or 'none'}")


def _check_widest(factory, target: str, kwargs: dict, width_arg: str, widest_width: int, inputs, source: dict, *,
                  checked: dict, np_dtype: np.dtype, available: int | None, torch) -> tuple[object, dict, int]:
    """The memory of the widest width checked before the first width trains: its parameters
    counted on torch's meta device (no memory), then the model itself built and run on a trial
    batch, which also refuses an input the model rejects. Returns (inputs, where they come
    from, batch size): the regression task's inputs when neither --input-shape nor the
    callable gave any."""
    from ..probing import estimate_bytes, one_line

    torch_dtype = getattr(torch, np_dtype.name)
    call = {**kwargs, width_arg: widest_width}
    counted = _meta_parameters(factory, call, torch)
    if counted is not None:  # parameters, their gradients and Adam's two moments
        check_memory(4 * counted * np_dtype.itemsize, available, dtype=np_dtype,
                     options=("--widths", "--batch", "--input-shape"))
    torch.manual_seed(checked["seed"])
    widest, example = _build(factory, target, call, width_arg, bool(kwargs))
    if inputs is None and example is None:
        task = make_task("regression", checked["batch"], rng=seed_streams(checked["seed"])["inputs"])
        inputs = torch.from_numpy(task.x.astype(np_dtype))
    else:
        source = source if inputs is not None else {"inputs": "example"}
    widest = widest.to(dtype=torch_dtype)
    args = _as_args(inputs if inputs is not None else example, torch, torch_dtype)
    full = args[0].shape[0] if isinstance(args[0], torch.Tensor) and args[0].ndim else 1
    trial = tuple(a[:min(2, full)] if isinstance(a, torch.Tensor) and a.ndim else a for a in args)
    try:
        needed = estimate_bytes(widest, trial, full, min(2, full))
    except Exception as exc:  # the user's forward
        raise InitcliError("input_shape", f"the model rejected the input: {one_line(exc)}") from None
    params_bytes = sum(p.numel() * p.element_size() for p in widest.parameters())
    del widest
    check_memory(needed + 2 * params_bytes, available, dtype=np_dtype,  # + Adam's two moments
                 options=("--widths", "--batch", "--input-shape"))
    return inputs, source, full

