"""`initcli probe --fix`: which options go with it, and its report. The `probe` command
(`probing`) parses and calls; `initcli.fixing` repairs."""

from __future__ import annotations

from ..errors import InitcliError
from .options import OutputOptions, note, say_hidden, stdout_console, write_machine

FIX_PRIORITY = ("stage", "verdict", "grad_ratio", "first_grad_var", "last_grad_var", "last_act_var", "max_dead_frac",
                "min_effective_rank", "max_saturated_frac", "last_input_cosine", "first_act_var", "modules")
LAYER_PRIORITY = ("module", "status", "weight_std_before", "weight_std_after", "act_var_after", "gain", "activation",
                  "act_var_before", "fan_in", "iterations", "type")


def check_fix_options(fix: str | None, save: str | None, out: OutputOptions, *, reinit: str | None) -> None:
    """--save only with --fix; --fix refuses the options it would ignore. Before any work."""
    if fix is None:
        if save is not None:
            raise InitcliError("save", "only applies with --fix (it writes the fixed model's state_dict)")
        return
    from ..fixing import check_fix

    check_fix(fix)
    if reinit is not None:
        raise InitcliError("reinit", "does not apply with --fix, which repairs the model as built")
    for name, value in (("plot", out.plot), ("save_plot", out.save_plot)):
        if value:
            raise InitcliError(name, "does not apply with --fix, whose report is the verdicts before and after")


def show_fix(result, fmt: str, target: str, seed: int) -> None:
    """Table: what the fix did to each weighted module, then the verdicts before and after.
    CSV: the two verdict rows. JSON: those, with the modules' rows and what was untouched."""
    from ..render import print_table
    from .probing import row_style

    rows = result.rows()
    if fmt == "table":
        console = stdout_console()
        say_hidden(print_table(result.layer_rows(), result.layer_columns, priority=LAYER_PRIORITY,
                               title=f"{target} · --fix {result.fix} · seed {seed}", console=console))
        say_hidden(print_table(rows, [c for c in result.columns if c != "reason"], cell_style=row_style,
                               priority=FIX_PRIORITY, console=console))
        for row in rows:
            console.print(f"{row['stage']}: {row['verdict']} — {row['reason']}", highlight=False, markup=False,
                          soft_wrap=True)
    else:
        write_machine(fmt, "probe", result.params, rows, result.columns, layers=result.layer_rows(),
                      untouched=list(result.untouched))
    others = [layer for layer in result.layers if layer.status not in ("rescaled", "within tol")]
    summary = f"initcli: --fix {result.fix} rescaled {result.rescaled} of {len(result.layers)} weighted modules"
    note(summary + "".join(f"; {layer.module}: {layer.status}" for layer in others))
    if result.untouched:
        note(f"initcli: matrices no Linear, Conv or Conv1D call reached, left as they were: "
             f"{', '.join(result.untouched)}")
    note(f"initcli: verdict: {result.before.verdict} → {result.after.verdict} — {result.after.reason}")
    if result.params.get("save") is not None:
        note(f"initcli: saved the fixed state_dict to {result.params['save']}")
