"""How the benches print their results: a context block, text tables and notes, with rich when it is installed.

A bench builds its tables as `TextTable`s (title, column names, rows, how many leading columns are left-aligned)
and hands them to `print_report` under its own title; without rich the same report comes out as aligned plain
text (`print_table`). `number`, `pct` and `ratio` are the cell formats the benches share.
"""

from __future__ import annotations

# (title, column names, rows, number of left-aligned leading columns)
TextTable = tuple[str, list[str], list[list[str]], int]


def number(value: float | None, fmt: str = "{:.0f}", none: str = "n/a") -> str:
    """`value` in `fmt`, or `none` when there is no value."""
    return none if value is None else fmt.format(value)


def pct(value: float | None) -> str:
    """A share in whole percent, e.g. `42 %`."""
    return number(value, "{:.0f} %")


def ratio(numerator: float, denominator: float) -> str:
    """`numerator / denominator` as e.g. `0.87x` (n/a without a positive denominator)."""
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


def print_table(header: list[str], body: list[list[str]], left: int) -> None:
    """An aligned plain-text table, indented by two spaces: the first `left` columns left-aligned, the rest right."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    for line in [header, *body]:
        cells = [cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        print("  " + "  ".join(cells).rstrip())


def print_report(context: list[tuple[str, str]], tables: list[TextTable], notes: list[str], title: str) -> None:
    """The context (key, value) under `title`, then each table, then the notes: rich tables if rich is installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(context, tables, notes, title)
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped output: rich would otherwise wrap the tables at 80 columns
    info = Table(title=title, show_header=False, box=None)
    info.add_column(style="bold")
    info.add_column()
    for key, value in context:
        info.add_row(key, value)
    console.print(info)
    for table_title, header, body, left in tables:
        table = Table(title=table_title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i < left else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)
    for note in notes:
        console.print(note, style="yellow", markup=False)


def _print_plain(context: list[tuple[str, str]], tables: list[TextTable], notes: list[str], title: str) -> None:
    print(title)
    width = max((len(key) for key, _ in context), default=0)
    for key, value in context:
        print(f"  {key.ljust(width)}  {value}")
    for table_title, header, body, left in tables:
        print(f"\n{table_title}")
        print_table(header, body, left)
    for note in notes:
        print(note)
