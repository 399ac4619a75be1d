"""Plain-text and Markdown tables in the layout of the paper's result tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

METRIC_COLUMNS = ("R1", "R5", "R10", "mAP", "mINP", "mSD")


def format_table(
    rows: Mapping[str, Mapping[str, float | int]],
    columns: Sequence[str] = METRIC_COLUMNS,
    *,
    extra: Sequence[str] = ("queries",),
    markdown: bool = False,
    digits: int = 2,
) -> str:
    """One line per named result: metric columns with ``digits`` decimals, then count columns."""
    cols = [c for c in columns] + [c for c in extra]
    header = ["model"] + cols
    body = []
    for name, row in rows.items():
        cells = [name]
        for c in cols:
            v = row.get(c)
            if v is None:
                cells.append("-")
            elif c in extra:
                cells.append(str(int(v)))
            else:
                cells.append(f"{float(v):.{digits}f}")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    if markdown:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"

        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(header), sep] + [line(r) for r in body])

    def plain(cells: Sequence[str]) -> str:
        return "  ".join(cells[0].ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    return "\n".join([plain(header), "-" * len(plain(header))] + [plain(r) for r in body])
