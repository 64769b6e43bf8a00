"""Which `events.ts_formats` would read a log's unparseable times: a hint for the error, never a guess applied.

`03/04/2025` is the 3rd of April in one export and the 4th of March in another; reading it either
way silently would be worse than refusing it. So validation parses only what is unambiguous (ISO
8601, compact dates, epoch) and the brand's declared formats; when times fail, this looks at a
sample of them and says which declaration would read them, or that two would and the brand must
choose.
"""

from __future__ import annotations

import duckdb

DATES = ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y", "%Y.%m.%d", "%Y年%m月%d日", "%d/%m/%y", "%m/%d/%y")
TIMES = ("", " %H:%M", " %H:%M:%S", " %I:%M %p", " %I:%M:%S %p", " %H时%M分", " %H:%M:%S.%f")
SAMPLE = 500  # distinct failing values looked at
READS = 0.95  # a format "reads" the sample when it parses this share of it


def ts_hint(con: duckdb.DuckDBPyConnection, table: str = "quarantine", column: str = "ts") -> str | None:
    """A sentence naming the `events.ts_formats` that would read the unparseable times in `table`, or None.

    Args:
        con: the connection holding the quarantine.
        table: the quarantine table (`reason`, and the raw `column` as text).
        column: the raw time column.

    Returns:
        None when no time is unparseable or no candidate format reads them.
    """
    values = [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT CAST({column} AS VARCHAR) FROM {table} "
            f"WHERE reason = 'unparseable ts' AND {column} IS NOT NULL ORDER BY 1 LIMIT {SAMPLE}"
        ).fetchall()
    ]
    if not values:
        return None
    formats = [d + t for d in DATES for t in TIMES]
    share = "avg((try_strptime(trim(v), ?) IS NOT NULL)::INT)"
    sql = f"SELECT {', '.join([share] * len(formats))} FROM (SELECT unnest(?::VARCHAR[]) AS v)"
    (shares,) = con.execute(sql, [*formats, values]).fetchall()
    fit = [f for f, s in zip(formats, shares) if s >= READS]
    if not fit:
        return None
    example = values[0]
    if len(fit) == 1:
        return f"times like '{example}' read as events.ts_formats: ['{fit[0]}']"
    return (
        f"times like '{example}' fit {' and '.join(repr(f) for f in fit[:3])}: say which one in events.ts_formats "
        "(day first or month first cannot be told from these values)"
    )
