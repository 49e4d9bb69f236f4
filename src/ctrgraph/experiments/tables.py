"""The one table writer: every study table and ``compare`` summary is written by :func:`write_table`
as markdown (``<stem>.md``: title, caption, a display table) and CSV (``<stem>.csv``: the same
rows with full-precision values), and returned as the manifest entry the HTML report renders.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


def fmt(v: Any, digits: int = 4) -> str:
    """A display cell: floats with ``digits`` decimals, NaN / None as ``n/a``."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def pm(mean: float, std: float, digits: int = 4) -> str:
    return "n/a" if mean is None or math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclass
class Column:
    """A table column: ``header`` shown, ``cell(row) -> str`` its display text (default: ``fmt(row[key])``)."""

    header: str
    key: str | None = None
    cell: Callable[[dict], str] | None = None

    def text(self, row: dict) -> str:
        return self.cell(row) if self.cell is not None else fmt(row.get(self.key))


def markdown(columns: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict], keys: list[str] | None = None) -> Path:
    """Rows as CSV with full-precision values; columns ``keys`` or the union of the rows' keys, in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = keys or list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in r.items()})
    return path


def write_table(stem: Path, rows: list[dict], columns: list[Column], title: str = "", caption: str = "",
                csv_keys: list[str] | None = None) -> dict:
    """Write ``<stem>.md`` and ``<stem>.csv``; returns ``{title, md, csv, columns, rows}`` (display
    cells) for the manifest. CSV columns: ``csv_keys`` or the union of the rows' keys, in order."""
    stem = Path(stem)
    write_csv(stem.with_suffix(".csv"), rows, csv_keys)
    headers = [c.header for c in columns]
    cells = [[c.text(r) for c in columns] for r in rows]
    md = (f"# {title}\n\n" if title else "") + (f"{caption}\n\n" if caption else "") + markdown(headers, cells)
    stem.with_suffix(".md").write_text(md)
    return {"title": title, "md": str(stem.with_suffix(".md")), "csv": str(stem.with_suffix(".csv")),
            "columns": headers, "rows": cells}
