"""Run a checks/ contract on the rows an asset is about to write.

`validate` returns what the factory needs for one transaction: the coerced valid rows, the
quarantined rows with their reasons, the failure cases (for `quality.failures`) and one
`RuleResult` per rule of the contract (for Dagster asset checks and OpenLineage assertions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from checks.rules import DRIFT_RULE, ERROR, Rule, rules_of
from pipelines.quality_sql import failure_cases_frame

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
        return self.failing_rows == 0 and self.message is None

    @property
    def blocking(self) -> bool:
        return not self.passed and self.rule.severity == ERROR and not self.rule.quarantine

    @property
    def failure_rate(self) -> float:
        return self.failing_rows / self.rows_checked if self.rows_checked else 0.0


@dataclass
class Validation:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    failures: pd.DataFrame
    results: list[RuleResult]

    @property
    def blocking(self) -> list[RuleResult]:
        return [r for r in self.results if r.blocking]


class ContractViolation(Exception):
    """A blocking (ERROR) rule failed: nothing was written for the partition."""

    def __init__(self, table: str, partition: str, failed: list[RuleResult]):
        self.failed = failed
        lines = [f"{table} [{partition or 'unpartitioned'}]: {len(failed)} blocking check(s) failed"]
        for result in failed:
            what = result.message or f"{result.failing_rows} of {result.rows_checked} rows"
            lines.append(f"  - {result.rule.name} ({result.rule.description}): {what}")
            lines += [f"      e.g. {case}" for case in result.sample[:3]]
        super().__init__("\n".join(lines))


def validate(
    frame: pd.DataFrame,
    contract: type[pa.DataFrameModel],
    *,
    key_columns: list[str],
    reference_values: dict[str, set] | None = None,
    expected_rows: int | None = None,
    previous_columns: list[tuple[str, str]] | None = None,
    columns: dict[str, str] | None = None,
    rules: list[Rule] | None = None,
    problems: dict[str, str] | None = None,
) -> Validation:
    """Validate `frame` against `contract`; never raises for bad data (see Validation.blocking).

    reference_values: rule name -> the set of values that the referenced column holds.
    expected_rows: for `row_count_matches`, the row count of that input partition.
    previous_columns / columns: the previous version's and this write's (name, type), for drift.
    rules / problems: the asset's rules when it has more than its contract's (see TableSpec.rules),
        and what the factory found wrong with the table-level ones (rule name -> message).
    """
    schema = contract.to_schema()
    rules = rules if rules is not None else rules_of(contract)
    try:
        frame = schema.coerce_dtype(frame)
    except (SchemaError, SchemaErrors):
        pass  # the values that do not parse are reported below as `schema` rule failures
    frame = frame.reset_index(drop=True)
    # the rules run inside DuckDB (pipelines/quality_sql.py), with pandera's semantics
    cases = failure_cases_frame(frame, contract, key_columns=key_columns, reference_values=reference_values or {})
    messages: dict[str, str] = dict(problems or {})

    for rule in rules:
        if rule.name.startswith("row_count_matches_") and expected_rows is not None and expected_rows != len(frame):
            messages[rule.name] = f"{len(frame)} rows, expected {expected_rows} (one per input row)"
        if rule.name == DRIFT_RULE and previous_columns is not None and columns is not None:
            if drift := describe_drift(previous_columns, list(columns.items())):
                messages[rule.name] = drift
    table_level = cases[cases["index"].isna()]
    for rule_name, group in table_level.groupby("rule"):
        messages.setdefault(rule_name, "; ".join(map(str, group["failure_case"].unique()))[:500])

    # one case per failing row and rule (a dataframe check reports each column it reads)
    row_cases = cases[cases["index"].notna()].drop_duplicates(["rule", "index"]).copy()
    row_cases["index"] = row_cases["index"].astype(int)
    results = []
    by_rule = dict(tuple(row_cases.groupby("rule"))) if not row_cases.empty else {}
    for rule in rules:
        group = by_rule.get(rule.name)
        failing = 0 if group is None else group["index"].nunique()
        sample = [] if group is None else [
            {"column": c, "value": v, "row_key": k}
            for c, v, k in group[["column", "failure_case", "row_key"]].head(SAMPLE_SIZE).itertuples(index=False)
        ]
        results.append(RuleResult(rule, failing, len(frame), sample, messages.get(rule.name)))

    severity = {rule.name: rule.severity for rule in rules}
    quarantining = {rule.name for rule in rules if rule.quarantine}
    to_quarantine = row_cases[row_cases["rule"].isin(quarantining)]
    reasons = to_quarantine.groupby("index")["rule"].agg(lambda r: ",".join(sorted(set(r))))
    quarantined = frame.loc[reasons.index].assign(**{QUARANTINE_REASONS: reasons.values})
    valid = frame.drop(index=reasons.index)
    failures = pd.DataFrame({
        "check_name": row_cases["rule"].to_numpy(),
        "severity": row_cases["rule"].map(severity).fillna(ERROR).to_numpy(),
        "column": row_cases["column"].astype("string").to_numpy(),
        "failing_value": row_cases["failure_case"].astype("string").to_numpy(),
        "row_key": row_cases["row_key"].astype("string").to_numpy(),
    })
    return Validation(valid.reset_index(drop=True), quarantined.reset_index(drop=True), failures, results)


def describe_drift(previous: list[tuple[str, str]], current: list[tuple[str, str]]) -> str | None:
    before, after = dict(previous), dict(current)
    changes = [f"added {c} {t}" for c, t in after.items() if c not in before]
    changes += [f"removed {c}" for c in before if c not in after]
    changes += [f"retyped {c} {before[c]} -> {t}" for c, t in after.items() if c in before and before[c] != t]
    return "; ".join(changes) or None
