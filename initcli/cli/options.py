"""Option groups shared by the commands, each defined once and attached whole; the shared
parsers and checks; the output helpers every command renders through.

A command declares a parameter typed with a group (`init: InitOptions`) and `command()`
spreads the group's fields into the command's options, then hands the command one frozen
instance. Checks that involve several options (an option that does not apply without
another) live here too, in `check_applies`, so that every command refuses the same way.
"""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from typing import Annotated, Any, Optional, get_type_hints

import typer

from ..errors import InitcliError

# -- option groups ----------------------------------------------------------------------------


def _group(cls):
    cls = dataclass(frozen=True)(cls)
    cls.__option_group__ = True
    return cls


@_group
class InitOptions:
    """How a scheme draws the weights (and biases)."""

    gain: Annotated[float, typer.Option(help="Multiplies the weights (the std) of every scheme.")] = 1.0
    mode: Annotated[Optional[str], typer.Option(
        help="fan_in, fan_out or fan_avg; overrides the preset's (variance-scaling schemes).")] = None
    distribution: Annotated[Optional[str], typer.Option(
        help="normal, uniform or truncated-normal; overrides the preset's.")] = None
    negative_slope: Annotated[float, typer.Option(
        help="Slope a of leaky-relu; He scales by 2/(1+a²) with it, as torch's kaiming does.")] = 0.01
    value: Annotated[Optional[float], typer.Option(help="The weight of the constant scheme (default 0.5).")] = None
    std: Annotated[Optional[float], typer.Option(
        help="The std of the normal and trunc-normal schemes (default 1), and of sparse (default 0.01).")] = None
    mean: Annotated[Optional[float], typer.Option(help="The mean of the normal and trunc-normal schemes (default 0).")] = (
        None)
    limit: Annotated[Optional[float], typer.Option(
        help="The limit of the uniform scheme, U(-limit, limit) (default 1).")] = None
    low: Annotated[Optional[float], typer.Option(
        help="uniform: lower bound of U(low, high), instead of --limit (default -1); trunc-normal: lower cut-off "
             "(default -2).")] = None
    high: Annotated[Optional[float], typer.Option(
        help="uniform: upper bound (default 1); trunc-normal: upper cut-off (default 2).")] = None
    sparsity: Annotated[Optional[float], typer.Option(
        help="sparse: the fraction of each column set to zero (default 0.1), as torch's sparse_.")] = None
    groups: Annotated[Optional[int], typer.Option(help="dirac: the number of groups (default 1).")] = None
    in_axis: Annotated[Optional[str], typer.Option(
        help="Axes of the input dimension for the fans, comma list (default 1: torch's layout), as JAX's.")] = None
    out_axis: Annotated[Optional[str], typer.Option(
        help="Axes of the output dimension for the fans, comma list (default 0), as JAX's.")] = None
    batch_axis: Annotated[Optional[str], typer.Option(
        help="Axes left out of the fans, comma list (default none), as JAX's.")] = None
    bias_std: Annotated[float, typer.Option(
        help="Biases are drawn from N(0, bias-std²); 0 gives zero bias.")] = 0.0

    def scheme_options(self) -> dict:
        """The keywords of `schemes.make_init` (activation aside); the fan axes parsed."""
        options = {k: v for k, v in asdict(self).items() if k != "bias_std"}
        for axis in ("in_axis", "out_axis", "batch_axis"):
            if options[axis] is not None:
                options[axis] = parse_axis_list(options[axis], axis)
        return options


@_group
class StackOptions:
    """The stack's shape, its inputs and its arithmetic."""

    depth: Annotated[Optional[int], typer.Option(help="Number of layers (default 10).")] = None
    width: Annotated[Optional[int], typer.Option(help="Units per layer, input included (default 256).")] = None
    sizes: Annotated[Optional[str], typer.Option(
        help="Layer sizes n0,n1,…,nL instead of --depth/--width, e.g. 784,256,256,10.")] = None
    batch: Annotated[int, typer.Option(help="Number of random inputs.")] = 512
    input_std: Annotated[float, typer.Option(help="Inputs are drawn from N(0, input-std²).")] = 1.0
    dtype: Annotated[str, typer.Option(help="float32 (what networks train in) or float64.")] = "float32"
    seed: Annotated[int, typer.Option(
        help="Seeds weights, biases, inputs, cotangent and batch order (separate streams).")] = 0

    def domain(self) -> dict:
        return {"sizes": None if self.sizes is None else parse_int_list(self.sizes, "sizes", min_len=2),
                "depth": self.depth, "width": self.width, "batch": self.batch, "input_std": self.input_std,
                "dtype": self.dtype, "seed": self.seed}


@dataclass(frozen=True)
class _SharedArchOptions:
    """How the layers connect."""

    residual: Annotated[Optional[bool], typer.Option(
        "--residual/--no-residual", help="Skip connections: each block is x + residual-scale·f(x). Off by default, "
                                         "on with --arch transformer (--no-residual removes them).")] = None
    residual_scale: Annotated[float, typer.Option(
        help="α of x + α·f(x) (0: zero-init branches, SkipInit/ReZero). Needs skip connections.")] = 1.0
    block: Annotated[int, typer.Option(help="Linear→activation layers per residual branch. Needs --residual.")] = 1
    norm: Annotated[str, typer.Option(
        help="none, or layer: LayerNorm between each Linear and its activation.")] = "none"
    residual_init: Annotated[Optional[str], typer.Option(
        help="A residual-init preset over the scheme: fixup, t-fixup, rezero, skipinit, deepnorm, gpt2 or "
             "depth-mup (see `initcli schemes`). Needs skip connections; sets the branch multiplier itself. "
             "With --arch transformer: gpt2, deepnorm (post-LN), rezero, skipinit or depth-mup.")] = None
    param: Annotated[str, typer.Option(
        help="Width parametrization: sp (the scheme as drawn), ntk or mup — per-layer output multipliers, "
             "init variances and (train) learning rates for the input, hidden and readout layers (Yang & Hu "
             "2021; Yang et al. 2022, Table 3; see `initcli schemes`). With --arch transformer, mup scales the "
             "attention logits by 1/d_head instead of 1/sqrt(d_head).")] = "sp"
    lsuv_tol: Annotated[float, typer.Option(help="lsuv: stop when |Var(h) − 1| is within this.")] = 0.05
    lsuv_max_iter: Annotated[int, typer.Option(help="lsuv: rescalings per layer at most.")] = 10
    architecture: Annotated[str, typer.Option(
        "--arch", help="mlp (Linear layers); conv: stride-1 'same' convolutions of --channels channels over "
                       "--spatial positions with a --kernel kernel; or transformer: blocks of multi-head "
                       "self-attention and an MLP, each behind a LayerNorm, on sequences of --seq-len tokens of "
                       "--width units.")] = "mlp"
    # each engine's own options (conv's --kernel, --channels, …; the transformer's --heads, …)
    # follow, spread from its declaration by `_with_engine_options`

    @property
    def kind(self) -> str:
        """A registered engine's name: 'mlp', 'conv', 'transformer'."""
        from ..propagation import check_arch

        return check_arch(self.architecture)

    @property
    def skips(self) -> bool:
        """Whether the layers have skip connections: --residual, or the engine's default (a
        transformer's are on)."""
        from ..engines import get

        return self.residual if self.residual is not None else get(self.kind).skips_by_default

    def _values(self) -> dict:
        """The group's values for an engine's `keywords`, comma lists parsed, after refusing the
        options another engine owns."""
        from ..engines import get, names

        kind, values = self.kind, asdict(self)
        for owner in names():
            for option in get(owner).options:
                given = values[option.name] is not None and values[option.name] is not False
                if given and owner != kind:
                    raise InitcliError(option.name, f"only applies with --arch {owner}")
                if given and option.int_list:
                    values[option.name] = parse_int_list(values[option.name], option.name)
        return values

    def domain(self) -> dict:
        """The MLP engine's keywords. Refuses another architecture (the commands that call
        this run Linear stacks only) and the options of one."""
        from ..engines import get

        if self.kind != "mlp":
            raise InitcliError("arch", f"{self.kind} does not apply to this command, which builds Linear stacks")
        return get("mlp").keywords(self._values())

    def engine_domain(self) -> dict:
        """The keywords of the chosen architecture's engine (the `arch` key names it)."""
        from ..engines import get

        return {"arch": self.kind} | get(self.kind).keywords(self._values())


def _with_engine_options(shared: type) -> type:
    """The architecture option group: the shared options, then every registered engine's own
    (`Engine.options`), in registry order. Engines declare them without numpy, so reading
    them costs the start-up next to nothing; a new engine's options appear in every command."""
    from dataclasses import field, make_dataclass

    from ..engines import get, names

    own = []
    for name in names():
        for option in get(name).options:
            if option.type is bool:  # a switch, off unless given
                own.append((option.name, Annotated[bool, typer.Option(option.flag, help=option.help)],
                            field(default=False)))
            else:  # unset: the engine's own default
                own.append((option.name, Annotated[Optional[option.type], typer.Option(help=option.help)],
                            field(default=None)))
    group = make_dataclass("ArchOptions", own, bases=(shared,), frozen=True)
    group.__module__, group.__option_group__ = __name__, True
    return group


ArchOptions = _with_engine_options(_SharedArchOptions)


@_group
class OutputOptions:
    """Where and how the results go."""

    fmt: Annotated[str, typer.Option("--format", "-f", help=(
        "auto, table, csv or json. auto: a table on a terminal, CSV when piped or redirected."))] = "auto"
    plot: Annotated[bool, typer.Option("--plot", help=(
        "Draw a chart in the terminal (on stderr when stdout is piped, so CSV stays clean)."))] = False
    save_plot: Annotated[Optional[str], typer.Option(help=(
        "Write the chart to a .png, .svg or .pdf file (needs matplotlib: pip install 'initcli[plot]')."))] = None
    dpi: Annotated[int, typer.Option(help="Resolution of a --save-plot PNG, in dots per inch (10–1200).")] = 150
    force: Annotated[bool, typer.Option(help="Let --save/--save-plot overwrite an existing file.")] = False


@_group
class FormatOnly:
    fmt: Annotated[str, typer.Option("--format", "-f", help=(
        "auto, table, csv or json. auto: a table on a terminal, CSV when piped or redirected."))] = "auto"


Scheme = Annotated[str, typer.Option("--scheme", "-s", help=(
    "Init scheme (see `initcli schemes`); its options may be spelled in it, as inspect prints its readings: "
    "he-normal(mode=fan_out,a=0.1), normal(std=0.02)."))]
Activation = Annotated[str, typer.Option("--activation", "-a", help=(
    "linear, relu, leaky-relu, tanh, sigmoid, selu, elu, gelu, silu or softplus."))]
Jobs = Annotated[Optional[int], typer.Option(
    help="Processes to run in (default: one per core); results do not depend on it.")]


def command(app: typer.Typer, name: str | None = None, *, short_help: str | None = None):
    """`app.command`, spreading every option-group parameter of the function into options."""
    def decorate(fn):
        hints = get_type_hints(fn, include_extras=True)
        groups: dict[str, type] = {}
        parameters, group_parameters = [], []
        for parameter in inspect.signature(fn).parameters.values():
            kind = hints.get(parameter.name)
            if is_dataclass(kind) and getattr(kind, "__option_group__", False):
                groups[parameter.name] = kind
                group_hints = get_type_hints(kind, include_extras=True)
                for field in fields(kind):
                    default = field.default if field.default is not MISSING else inspect.Parameter.empty
                    group_parameters.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                                        annotation=group_hints[field.name]))
            else:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY,
                                                    annotation=hints.get(parameter.name, parameter.annotation)))

        parameters += group_parameters  # the command's own options first in --help

        @functools.wraps(fn)
        def wrapper(**kwargs):
            for group_name, group in groups.items():
                kwargs[group_name] = group(**{f.name: kwargs.pop(f.name) for f in fields(group)})
            return fn(**kwargs)

        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__
        help_text = inspect.getdoc(fn) or ""
        return app.command(name, short_help=short_help or help_text.split("\n")[0])(wrapper)
    return decorate


# -- parsers and checks -------------------------------------------------------------------------


def parse_int_list(text: str, param: str, *, min_len: int = 1) -> list[int]:
    """'784,256,10' -> [784, 256, 10]; anything but positive integers is refused."""
    items = [item.strip() for item in text.split(",")]
    values = []
    for item in items:
        if not item.isdecimal() or int(item) <= 0:  # isdecimal: int() takes every such string
            shown = item if item else "(empty)"
            raise InitcliError(param, f"must be a comma list of positive integers such as 784,256,10; "
                                      f"'{shown}' is not one")
        if len(item) > 12:  # more than any memory holds; int() of a huge string is slow
            raise InitcliError(param, f"'{item[:20]}…' is too large")
        values.append(int(item))
    if len(values) < min_len:
        raise InitcliError(param, f"needs at least {min_len} comma-separated sizes, got '{text}'")
    return values


def parse_axis_list(text: str, param: str) -> list[int]:
    """'1' or '-1,2' -> axes; any integer, negative counting from the end (checked against the
    tensor's rank where it is drawn)."""
    axes = []
    for item in (item.strip() for item in text.split(",")):
        body = item[1:] if item.startswith("-") else item
        if not body.isdecimal() or len(body) > 3:
            raise InitcliError(param, f"must be a comma list of axes such as 1 or 0,-1; '{item}' is not one")
        axes.append(int(item))
    return axes


def parse_name_list(text: str, param: str) -> list[str]:
    """'relu, tanh' -> ['relu', 'tanh']; empty items are refused. Commas inside parentheses
    belong to one item: 'he-normal(mode=fan_out,a=0.1),xavier' is two schemes."""
    import re

    items = [item.strip() for item in re.split(r",(?![^()]*\))", text)]
    if not all(items):
        raise InitcliError(param, f"must be a comma list of names such as relu,tanh; got '{text}'")
    return items


def given() -> set[str]:
    """The options the user typed (or set through the environment), by parameter name."""
    import importlib

    # typer ≥ 0.25 runs on its vendored copy of click (typer._click), older ones on click itself
    package = typer.Context.__mro__[1].__module__.rsplit(".", 1)[0]
    core = importlib.import_module(f"{package}.core")
    ctx = importlib.import_module(f"{package}.globals").get_current_context(silent=True)
    if ctx is None:
        return set()
    sources = {core.ParameterSource.COMMANDLINE, core.ParameterSource.ENVIRONMENT}
    return {name for name in ctx.params if ctx.get_parameter_source(name) in sources}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_applies(*, schemes: list[str] | None = None, arch: ArchOptions | None = None,
                  weights_file: bool = False) -> None:
    """Refuse options that would be silently ignored: architecture options without the one
    they belong to, lsuv options without the lsuv scheme, init options with a weights file
    (which holds the weights)."""
    typed = given()
    if arch is not None:
        for name in ("residual_scale", "block", "residual_init"):
            if name in typed and not arch.skips:
                raise InitcliError(name, "only applies with skip connections (--residual)")
        if "residual_scale" in typed and arch.residual_init is not None:
            raise InitcliError("residual_scale", f"does not apply with --residual-init {arch.residual_init}, "
                                                 "which sets the branch multiplier itself")
    if schemes is not None and typed & {"lsuv_tol", "lsuv_max_iter"}:
        from ..schemes import get_scheme

        if not any(get_scheme(s).kind == "lsuv" for s in schemes):
            name = sorted(typed & {"lsuv_tol", "lsuv_max_iter"})[0]
            raise InitcliError(name, "only applies to the lsuv scheme")
    if weights_file:
        init_names = {f.name for f in fields(InitOptions)} | {"scheme"}
        clash = sorted(typed & init_names)
        if clash:
            raise InitcliError(clash[0], "does not apply with --weights: the file holds the weights and biases "
                                         "(theory uses their measured variances)")


def warn_ignored(schemes: list[str], init: InitOptions) -> None:
    """One stderr line for options a scheme does not use, so nobody believes they took effect."""
    from ..schemes import get_scheme, ignored_options

    options = {k: v for k, v in init.scheme_options().items() if k not in ("gain", "negative_slope")}
    for name in schemes:
        ignored = ignored_options(name, **options)
        if ignored:
            verb = "does not apply" if len(ignored) == 1 else "do not apply"
            warn(f"{' and '.join(ignored)} {verb} to the '{get_scheme(name).name}' scheme: ignored")


def warn(text: str) -> None:
    from ..render import stderr_console

    stderr_console().print(f"initcli: warning: {text}", soft_wrap=True, highlight=False, markup=False)


def note(text: str) -> None:
    from ..render import stderr_console

    stderr_console().print(text, soft_wrap=True, highlight=False, markup=False)


def check_outputs(out: OutputOptions, *extra: tuple[str | None, str, tuple[str, ...]]) -> None:
    """Every output path checked before any work: --save-plot (and extra (path, param, suffixes))."""
    from ..charts import check_dpi
    from ..files import check_output

    check_dpi(out.dpi)
    if out.save_plot is not None:
        from ..charts import PLOT_FORMATS, require_matplotlib

        check_output(out.save_plot, "save_plot", force=out.force, suffixes=PLOT_FORMATS)
        require_matplotlib()
    for path, param, suffixes in extra:
        if path is not None:
            if out.save_plot is not None and _same_path(path, out.save_plot):
                raise InitcliError(param, f"is the same file as --save-plot ('{path}')")
            check_output(path, param, force=out.force, suffixes=suffixes)


def _same_path(a: str, b: str) -> bool:
    import os

    return os.path.abspath(a) == os.path.abspath(b)


# -- output -------------------------------------------------------------------------------


def output_format(fmt: str) -> str:
    from ..render import resolve_format

    return resolve_format(fmt, sys.stdout.isatty())


def stdout_console():
    from ..render import stdout_console as console

    return console()


def write_machine(fmt: str, command_name: str, params: dict, rows: list[dict], columns, **extra: Any) -> None:
    from ..render import write_csv, write_json

    if fmt == "csv":
        write_csv(rows, columns, sys.stdout)
    else:
        write_json(command_name, params, rows, sys.stdout, **extra)
    sys.stdout.flush()


def say_hidden(hidden: list[str]) -> None:
    from ..render import hidden_columns_note

    if hidden:
        hidden_columns_note(hidden)


def sizes_text(sizes: list[int]) -> str:
    """'20×64' for a stack of equal widths (layers × width), else the sizes."""
    if len(set(sizes)) == 1:
        return f"width {sizes[0]}"
    return "sizes " + ",".join(map(str, sizes))


def widths_text(widths: list[int]) -> str:
    """Hidden widths as '20×64' when they are equal, else '64,64,32'."""
    if len(widths) > 1 and len(set(widths)) == 1:
        return f"{len(widths)}×{widths[0]}"
    return ",".join(map(str, widths))


def chart_console():
    from ..render import chart_console as console

    return console()


def show(lines) -> None:
    console = chart_console()
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def chart_width(console) -> int:
    return max(40, min(console.width, 110))


class progress:
    """A transient rich progress bar on stderr, only when stderr is a terminal and the work
    lasts more than a second; otherwise nothing. `with progress(total, label) as advance`:
    advance(steps) may be called from the main thread only."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.bar, self.task = total, label, None, None

    def __enter__(self):
        import time

        if sys.stderr is None or not sys.stderr.isatty() or self.total <= 0:
            return None
        from rich.console import Console
        from rich.progress import Progress

        started = time.perf_counter()
        self.bar = Progress(console=Console(stderr=True), transient=True)
        done = 0

        def advance(steps: int = 1) -> None:
            nonlocal done
            done += steps
            if self.task is None and time.perf_counter() - started > 1.0:
                self.bar.start()
                self.task = self.bar.add_task(self.label, total=self.total, completed=done - steps)
            if self.task is not None:
                self.bar.advance(self.task, steps)
        return advance

    def __exit__(self, *exc) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.stop()
