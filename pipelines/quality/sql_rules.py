"""A dataframe check written once, in SQL: what `provline contract import` gives a rule it reads from an ODCS
document. The runner (runner.py) runs `statistics={"sql": ...}` inside DuckDB; pandera on pandas (and
anything else that calls the check) gets `rows_passing`, the same expression over the frame in DuckDB."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.sql import scratch

_VIEW, _ROW = "__provline_rows", "__provline_row"


def rows_passing(frame: pd.DataFrame, sql: str) -> pd.Series:
    """Per row of `frame`, whether the DuckDB boolean expression `sql` is TRUE for it (NULL fails, as in the
    runner). Window functions are allowed: the rows are numbered before, and put back in order after."""
    with scratch() as con:
        con.register(_VIEW, frame.reset_index(drop=True).assign(**{_ROW: np.arange(len(frame))}))
        try:
            passed = con.execute(f"SELECT coalesce(({sql}), FALSE) FROM {_VIEW} ORDER BY {_ROW}").fetchnumpy()
        finally:
            con.unregister(_VIEW)
    return pd.Series(next(iter(passed.values())), index=frame.index, dtype=bool)
