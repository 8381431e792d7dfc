"""Tables redrawn whole, with the columns sized here rather than when next idle."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable


def refill(
    table: DataTable[Any],
    columns: dict[str, int | None],
    rows: list[tuple[Any, ...]],
    keys: list[str] | None = None,
    cursor: int | None = None,
) -> None:
    """The table anew, its columns too, a column without a width (a path, a URI) as wide
    as what it holds now, measured here: a table sizes such a column when it is next idle,
    which a table behind a modal that opened meanwhile may not be (seen: a path cut to
    its heading's width). The cursor stays on its line, or goes to ``cursor``'s."""
    row = table.cursor_row if cursor is None else cursor
    table.clear(columns=True)
    for at, (column, width) in enumerate(columns.items()):
        fit = max([len(column), *(cell_width(r[at]) for r in rows)])
        table.add_column(column, key=column, width=width or fit)
    if keys is None:
        table.add_rows(rows)
    else:
        for key, cells in zip(keys, rows, strict=True):
            table.add_row(*cells, key=key)
    table.move_cursor(row=row)


def cell_width(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)
