"""A dataframe check stated once, in SQL (`sql_check`): how a contract writes a rule over several columns, and
what `provline contract import` gives a rule it reads from an ODCS document. The runner (runner.py) runs
`statistics={"sql": ...}` inside DuckDB; pandera on pandas (and anything else that calls the check) gets
`rows_passing`, the same expression over the frame in DuckDB: one statement of the rule, one semantics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa

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


def sql_check(name: str, sql: str, description: str) -> classmethod:
    """A contract's dataframe check, stated as a DuckDB boolean expression over the table's columns (TRUE for a
    row that passes; NULL fails; window functions allowed). In a DataFrameModel's body:

        times_are_hhmm = sql_check("times_are_hhmm", "dep_time % 100 < 60", "Times are HHMM.")

    `description` is the rule's description (its docstring, shown in Dagster and the exported contract)."""

    def check(cls, df: pd.DataFrame) -> pd.Series:
        return rows_passing(df, sql)

    check.__name__, check.__doc__ = name, description
    return pa.dataframe_check(name=name, statistics={"sql": sql})(check)
