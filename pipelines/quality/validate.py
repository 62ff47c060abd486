"""Run a contract on the rows an asset is about to write, for one partition or a range at once.

`validate` returns what the factory needs for the commit: the valid rows, the quarantined rows with
their reasons, the failure cases (for `quality.failures`) and, per partition, one `RuleResult` per
rule of the contract (for Dagster asset checks and OpenLineage assertions). The rows are a table of the
scratch database (pipelines/rows.py): every rule runs once over all of them (pipelines/quality/runner.py),
only the failing rows leave DuckDB, and the quarantined rows are moved out of the table, which then holds
the valid ones. The results are counted per partition, so a range gives exactly the results day-by-day runs
would give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow

from pipelines.quality.rules import (
    BLOCKING,
    DRIFT_RULE,
    VOLUME_RULE,
    Rule,
    allow_empty,
    max_row_drop,
    rules_of,
    volume_problem,
)
from pipelines.quality.runner import failure_cases_frame
from pipelines.rows import Rows
from pipelines.sql import PARTITION, UNPARTITIONED, counts_of, quote

SAMPLE_SIZE = 5
QUARANTINE_REASONS = "_quarantine_reasons"


@dataclass
class RuleResult:
    rule: Rule
    failing_rows: int
    rows_checked: int
    sample: list[dict] = field(default_factory=list)
    message: str | None = None

    @property
    def passed(self) -> bool:
        """Nothing found, or no more failing rows than the rule's threshold allows, or an acknowledged defect."""
        return not self.found or self.within_threshold or self.acknowledged

    @property
    def found(self) -> bool:
        """Whether any row failed, or the table as a whole did (before thresholds and acknowledgements)."""
        return self.failing_rows > 0 or self.message is not None

    @property
    def within_threshold(self) -> bool:
        return self.message is None and self.failing_rows <= self.rule.max_failure_rate * self.rows_checked

    @property
    def acknowledged(self) -> bool:
        """It found something the team acknowledged, and the acknowledgement has not expired."""
        ack = self.rule.acknowledgement
        return self.found and ack is not None and ack.active()

    @property
    def blocking(self) -> bool:
        return not self.passed and self.rule.behaviour == BLOCKING

    @property
    def failure_rate(self) -> float:
        return self.failing_rows / self.rows_checked if self.rows_checked else 0.0

    def finding(self) -> str:
        """The failure in words: the table-level finding, or how many rows fail and a failing value
        (its column, the row's key and, for a source row, the file and line)."""
        what = self.message or f"{self.failing_rows} of {self.rows_checked} rows"
        return f"{what}; e.g. {describe_case(self.sample[0])}" if self.sample else what


def group_by_check(items: list) -> dict[str, list]:
    """Rules (or their results) grouped by the Dagster check that reports them, in rule order."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault((item.rule if isinstance(item, RuleResult) else item).check, []).append(item)
    return groups


def describe_case(case: dict) -> str:
    """One failure case: `column=value (row key, file line N)`."""
    where = ", ".join(str(part) for part in (case.get("row_key"), case.get("source")) if part is not None)
    return f"{case['column']}={case['value']!r}" + (f" ({where})" if where else "")


@dataclass
class Validation:
    """The contract's verdict on the rows of one or more partitions. `valid` (the rows to write, in the scratch
    database), `quarantined` (the rows set aside with their reasons, few: Arrow) and `failures` (the failure
    cases) carry a PARTITION column; `results` has one list of RuleResults per partition."""

    valid: Rows
    quarantined: pyarrow.Table
    failures: pd.DataFrame
    results: dict[str, list[RuleResult]]

    @cached_property
    def unique_columns(self) -> list[str]:
        """The columns whose uniqueness rule passed in every partition: each one's distinct count is its non-null
        count (a key's, computed again, would be the most expensive statistic)."""
        uniqueness = [r for results in self.results.values() for r in results
                      if r.rule.column and r.rule.name == f"{r.rule.column}_unique"]
        return sorted({r.rule.column for r in uniqueness} - {r.rule.column for r in uniqueness if r.found})

    @cached_property
    def quarantined_counts(self) -> dict[str, int]:
        """Quarantined rows per partition (each row once, however many rules it failed)."""
        return counts_of(self.quarantined)

    def blocking(self, partition: str) -> list[RuleResult]:
        return [r for r in self.results[partition] if r.blocking]

    @cached_property
    def failed_partitions(self) -> list[str]:
        return [p for p in self.results if self.blocking(p)]


class ContractViolation(Exception):
    """A blocking rule failed: nothing was written for the partition."""

    def __init__(self, table: str, partition: str, failed: list[RuleResult]):
        self.failed = failed
        super().__init__("\n".join(describe_failures(table, partition, failed)))


def describe_failures(table: str, partition: str, failed: list[RuleResult]) -> list[str]:
    """What failed, rule by rule: name, description, how many rows, and a few failing values."""
    lines = [f"{table} [{partition or 'unpartitioned'}]: {len(failed)} blocking check(s) failed"]
    for result in failed:
        what = result.message or f"{result.failing_rows} of {result.rows_checked} rows"
        lines.append(f"  - {result.rule.name} ({result.rule.description}): {what}")
        lines += [f"      e.g. {describe_case(case)}" for case in result.sample[:3]]
    return lines


def validate(
    rows: Rows | pyarrow.Table | pd.DataFrame,
    contract: type[pa.DataFrameModel],
    *,
    key_columns: Sequence[str],
    partitions: Sequence[str] = (UNPARTITIONED,),
    reference_values: Mapping[str, set] | None = None,
    expected_rows: Mapping[str, int] | None = None,
    previous: Mapping[str, dict] | None = None,
    columns: dict[str, str] | None = None,
    rules: list[Rule] | None = None,
    problems: Mapping[str, Mapping[str, str]] | None = None,
    lines: str | None = None,
    locate: Callable[[np.ndarray], np.ndarray] | None = None,
    outside: pd.DataFrame | None = None,
) -> Validation:
    """Validate `rows` against `contract`; never raises for bad data (see Validation.blocking).

    rows: the rows to write, in the scratch database (rows in memory are loaded there); a PARTITION column says
        which of `partitions` each row belongs to (without it, every row belongs to the only partition). The
        quarantined rows are taken out of it: it is the Validation's `valid`.
    reference_values: rule name -> the set of values that the referenced column holds.
    expected_rows: for `row_count_matches`, per partition the row count of that input partition.
    previous: per partition its previous version (version-log row: `columns`, `row_count`), for
        drift and volume.
    columns: this write's (name -> type), for drift.
    rules / problems: the asset's rules when it has more than its contract's (see TableSpec.rules),
        and what the factory found wrong, per partition (partition -> rule name -> message).
    lines / locate: for source rows, the column holding each row's line in its file (not data: never checked)
        and how to name lines ("orders.csv line 12"), asked for the failing rows only.
    outside: failure cases (rule, column, failure_case, row_key, source) of source rows that belong to no
        partition, so are not in `rows`: each partition validated counts and records them.
    """
    rules = rules if rules is not None else rules_of(contract)
    if not isinstance(rows, Rows):
        rows = _loaded(rows, partitions[0])
    carry = [PARTITION, *([lines] if lines else [])]
    cases = failure_cases_frame(rows, contract, key_columns=key_columns, reference_values=reference_values or {},
                                partition_column=PARTITION, carry=carry)
    table_level = cases[cases["index"].isna()]
    shared = {rule: "; ".join(map(str, group["failure_case"].unique()))[:500]
              for rule, group in table_level.groupby("rule")}
    # one case per failing row and rule (a dataframe check reports each column it reads)
    row_cases = cases[cases["index"].notna()].drop_duplicates(["rule", "index"]).copy()
    row_cases["index"] = row_cases["index"].astype("int64")
    row_cases["source"] = locate(row_cases[lines].to_numpy()) if locate is not None else None
    if outside is not None and not outside.empty:
        counted_cases = pd.concat([row_cases, *(outside.assign(**{PARTITION: p}) for p in partitions)],
                                  ignore_index=True)
    else:
        counted_cases = row_cases

    counted = counted_cases.groupby([PARTITION, "rule"]).size().to_dict()
    samples = {key: [_case(c, v, k, s) for c, v, k, s in group[["column", "failure_case", "row_key", "source"]]
                     .itertuples(index=False)]
               for key, group in counted_cases.groupby([PARTITION, "rule"]).head(SAMPLE_SIZE)
               .groupby([PARTITION, "rule"])}
    sizes = rows.counts()
    results = {}
    for partition in partitions:
        messages = _messages(rules, partition, sizes.get(partition, 0), contract, expected_rows, previous, columns)
        messages = {**shared, **messages, **(problems or {}).get(partition, {})}
        results[partition] = [
            RuleResult(rule, counted.get((partition, rule.name), 0), sizes.get(partition, 0),
                       samples.get((partition, rule.name), []), messages.get(rule.name))
            for rule in rules
        ]

    behaviour = {rule.name: rule.behaviour for rule in rules}
    quarantining = {rule.name for rule in rules if rule.quarantine}
    to_quarantine = row_cases[row_cases["rule"].isin(quarantining)]
    reasons = to_quarantine.groupby("index")["rule"].agg(lambda r: ",".join(sorted(set(r))))
    if locate is not None:  # the rule names, then where the row came from
        where = to_quarantine.drop_duplicates("index").set_index("index")["source"]
        reasons = reasons + " (" + where.loc[reasons.index] + ")"
    quarantined = rows.take_out(reasons.index.to_numpy())
    quarantined = quarantined.append_column(
        QUARANTINE_REASONS, pyarrow.array(reasons.to_numpy(dtype=object), pyarrow.string()))
    failures = pd.DataFrame({
        PARTITION: counted_cases[PARTITION].to_numpy(),
        "check_name": counted_cases["rule"].to_numpy(),
        "severity": counted_cases["rule"].map(behaviour).fillna(BLOCKING).to_numpy(),
        "column": counted_cases["column"].astype("string").to_numpy(),
        "failing_value": counted_cases["failure_case"].astype("string").to_numpy(),
        # quality.failures has no column of its own for a source row's file and line: the key carries it
        "row_key": _located(counted_cases["row_key"], counted_cases["source"]).to_numpy(),
    })
    return Validation(rows, quarantined, failures, results)


def _loaded(rows: pyarrow.Table | pd.DataFrame, partition: str) -> Rows:
    """Rows in memory, into the scratch database, each labelled `partition` unless they say their own."""
    names = rows.column_names if isinstance(rows, pyarrow.Table) else list(rows.columns)
    if PARTITION in names:
        return Rows.load(rows)
    return Rows.load(rows, f"SELECT *, CAST($partition AS VARCHAR) AS {quote(PARTITION)} FROM {{source}}",
                     {"partition": partition})


def _case(column, value, row_key, source) -> dict:
    case = {"column": column, "value": value, "row_key": row_key}
    return case | ({"source": source} if isinstance(source, str) else {})


def _located(row_keys: pd.Series, sources: pd.Series) -> pd.Series:
    """`row key (file line N)` where the row came from a source file, else the row key."""
    keys = row_keys.astype("string")
    where = sources.astype("string")
    return keys.where(where.isna(), keys.fillna("") + " (" + where + ")").str.strip()


def _messages(
    rules: list[Rule], partition: str, rows: int, contract: type[pa.DataFrameModel],
    expected_rows: Mapping[str, int] | None, previous: Mapping[str, dict] | None, columns: dict[str, str] | None,
) -> dict[str, str]:
    """The table-level rules' findings for one partition (row count, drift, volume)."""
    messages = {}
    before = (previous or {}).get(partition)
    for rule in rules:
        if rule.name.startswith("row_count_matches_") and expected_rows is not None \
                and expected_rows.get(partition, 0) != rows:
            messages[rule.name] = f"{rows} rows, expected {expected_rows.get(partition, 0)} (one per input row)"
        elif rule.name == DRIFT_RULE and before is not None and columns is not None:
            if drift := describe_drift(before["columns"], list(columns.items())):
                messages[rule.name] = drift
        elif rule.name == VOLUME_RULE:
            previous_rows = before["row_count"] if before is not None else None
            if problem := volume_problem(rows, previous_rows, max_row_drop(contract), allow_empty(contract)):
                messages[rule.name] = problem
    return messages


def describe_drift(previous: list[tuple[str, str]], current: list[tuple[str, str]]) -> str | None:
    before, after = dict(previous), dict(current)
    changes = [f"added {c} {t}" for c, t in after.items() if c not in before]
    changes += [f"removed {c}" for c in before if c not in after]
    changes += [f"retyped {c} {before[c]} -> {t}" for c, t in after.items() if c in before and before[c] != t]
    return "; ".join(changes) or None
