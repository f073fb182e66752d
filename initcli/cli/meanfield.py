"""`initcli gain` and `initcli critical`: mean-field theory with no sampling at all."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .options import (
    FormatOnly,
    command,
    note,
    output_format,
    parse_name_list,
    progress,
    say_hidden,
    stdout_console,
    write_machine,
)

NegativeSlope = Annotated[float, typer.Option(
    help="Slope a of leaky-relu; He scales by 2/(1+a²) with it, as torch's kaiming does.")]


@command(app, "gain")
def gain_command(
    out: FormatOnly,
    activation: Annotated[Optional[str], typer.Option("--activation", "-a", help=(
        "Comma list of activations (default: every one initcli knows)."))] = None,
    negative_slope: NegativeSlope = 0.01,
) -> None:
    """Weight gains per activation: torch's table, and the ones that keep q = 1 forward and backward.

    forward_gain = 1/sqrt(E[φ(z)²]), backward_gain = 1/sqrt(E[φ'(z)²]), z ~ N(0, 1), by quadrature.
    """
    from dataclasses import asdict

    from ..activations import ACTIVATION_NAMES
    from ..render import print_table
    from ..theory import gain as compute_gain

    fmt = output_format(out.fmt)
    names = ACTIVATION_NAMES if activation is None else parse_name_list(activation, "activation")
    rows = [asdict(compute_gain(name, negative_slope)) for name in names]
    columns = ["activation", "torch_gain", "forward_gain", "backward_gain"]
    if fmt == "table":
        say_hidden(print_table(rows, columns, title="gains (z ~ N(0,1))", console=stdout_console()))
    else:
        write_machine(fmt, "gain", {"activations": list(names), "negative_slope": negative_slope}, rows, columns)


@command(app)
def critical(
    out: FormatOnly,
    activation: Annotated[str, typer.Option("--activation", "-a", help="The activation.")] = "tanh",
    bias_std: Annotated[float, typer.Option(help="σ_b, the bias std, in [0, 10000].")] = 0.0,
    negative_slope: NegativeSlope = 0.01,
) -> None:
    """The edge of chaos: the σ_w where χ = 1 for this bias std, and the depth scales around it.

    Rows are σ_w at multiples of the critical value. q_star is the fixed point of the
    pre-activation variance, chi the per-layer gradient factor there, c_star the correlation
    two inputs converge to, xi_q / xi_c / xi_grad the depth scales of variance, correlation
    and gradient, max_depth ≈ 6·xi_c (Schoenholz et al. 2017). Weight std = σ_w/sqrt(fan_in).
    phase is ordered/critical/chaotic at a finite q*, vanishing (q* = 0) or exploding
    (q* = ∞) otherwise (relu, leaky-relu, linear without bias): there the correlation map
    does not depend on σ_w, xi_c and max_depth are inf and xi_grad is the depth scale.
    """
    from dataclasses import asdict

    from ..render import print_table
    from ..theory import critical as find_critical
    from ..theory import critical_steps, critical_summary

    fmt = output_format(out.fmt)
    with progress(critical_steps(), "critical") as advance:
        sigma_star, phases = find_critical(activation, bias_std, negative_slope=negative_slope, progress=advance)
    rows = [asdict(p) for p in phases]
    columns = list(rows[0])
    summary = critical_summary(activation, bias_std, sigma_star, phases)
    if fmt == "table":
        console = stdout_console()
        console.print(summary, highlight=False, soft_wrap=True, markup=False)
        say_hidden(print_table(rows, columns, console=console,
                               cell_style=lambda c, v: "bold" if c == "phase" and v == "critical" else None))
    else:
        write_machine(fmt, "critical", {"activation": activation, "bias_std": bias_std,
                                        "negative_slope": negative_slope, "sigma_w_critical": sigma_star},
                      rows, columns)
        note(summary)
