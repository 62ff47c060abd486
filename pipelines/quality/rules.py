"""The rule vocabulary shared by every contract in checks/<domain>.py.

A contract is a pandera DataFrameModel. Each of its checks becomes one named rule, reported by a
Dagster asset check (see `Rule.check`), and each rule has one of three behaviours — what a failure does:

- **blocking**: the partition is not written (it keeps its previous version), the failure is recorded
  and downstream refuses to build from it;
- **quarantine**: the failing rows go to `quarantine.<schema>_<table>` with their reasons, the rest
  are written;
- **warn**: recorded; everything is written.

Column checks (`nullable=False`, `unique=True`, `ge=`, `isin=`, ...) are named `<column>_<check>`
and block; `Field(metadata={"severity": WARN})` makes them warn and `Field(metadata={"on_fail":
QUARANTINE})` quarantines. A rule over several columns is a dataframe check, stated once, in SQL:
`name = sql_check("name", "<DuckDB boolean expression over the table's columns>", "description")`
(pipelines/quality/sql_rules.py; it keeps its name and blocks; list it in `Config.metadata["warn"]` or
`["quarantine"]` to change that). A row passes when the expression is TRUE (NULL fails: write it
null-safe); window functions are allowed (`count(*) OVER (PARTITION BY a, b) = 1` for a composite key).
pipelines/quality/runner.py runs it in DuckDB, and pandera on pandas (a test calling the contract)
runs the same expression over the frame in DuckDB: one statement, one meaning. (A hand-written
`@pa.dataframe_check` with `statistics={"sql": ...}` works too; one without SQL runs with pandera on
pandas, alone, after the runner's scan.) Built-in column checks
(`ge=`, `in_range=`, `isin=`, `str_length=`, ...) need nothing: they are translated. Also:

- `Config.metadata["references"]`: referential integrity against another warehouse table;
- `Config.metadata["row_count_matches"]`: the output has exactly one row per row of that
  input partition;
- `Config.metadata["drift"]`: severity of a column added, removed or retyped since the
  previous version (WARN by default);
- `volume` (every table): a partition whose row count drops to 0, or by more than
  `Config.metadata["max_row_drop"]` (a share, default 0.5) of its previous version, is refused:
  an empty or truncated delivery never silently replaces good data; so is an empty partition with
  no previous version, unless `Config.metadata["allow_empty"]` is True; blocking;
- `schema`: columns present with parseable types; always blocking.
- `Config.metadata["version"]`: the contract's version (semver, "1.0.0" when not given), recorded with
  every version it checked and in its ODCS export (pipelines/contracts/).
- `source_rows_in_partitions` (partitioned source tables): a row of the source file that belongs to
  no daily partition (no valid date, or a date outside them) is counted, recorded with its file and
  line and kept out at the source (quarantine): it blocks no partition, and none is silently lost.

Two ways to keep a known, accepted defect from failing its check every day:

- **Thresholds** (Great Expectations' `mostly`, Soda's `warn when > x%`): `Config.metadata["max_failure_rate"]
  = {rule name: share}` lets a row-level rule pass while at most that share of the partition's rows fail it;
  above it the rule fails as usual. The failing rows are recorded (and quarantined) either way.
- **Acknowledgements**: a team that knows about a defect says so, with a note and an expiry, where the table is
  declared (`production_asset(..., acknowledged=[acknowledge(rule, note, expires)])`, not in the contract: an
  acknowledgement changes no verdict of the data, so no version). Until it expires the rule passes, and its
  check's metadata, `provline health` and the stored result say it was acknowledged; a blocking rule cannot be.

`Rule.severity` is what OpenLineage and Dagster call it: "error" for a blocking rule, "warn" for the
others (a quarantining rule never blocks the pipeline). Everywhere else provline says what a rule does: blocking,
quarantine or warn (its `behaviour`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

import pandera.pandas as pa

Severity = Literal["error", "warn"]
ERROR: Severity = "error"
WARN: Severity = "warn"
Behaviour = Literal["blocking", "quarantine", "warn"]
BLOCKING: Behaviour = "blocking"
QUARANTINE: Behaviour = "quarantine"

SCHEMA_RULE = "schema"
SOURCE_COVERAGE_RULE = "source_rows_in_partitions"
CHECK_OF_BEHAVIOUR: dict[Behaviour, str] = {BLOCKING: "contract", QUARANTINE: "quarantine", WARN: "warnings"}
"""The Dagster asset check that reports a table's rules of each behaviour (see `Rule.check`)."""
DRIFT_RULE = "schema_drift"
VOLUME_RULE = "volume"
DEFAULT_MAX_ROW_DROP = 0.5
DEFAULT_CONTRACT_VERSION = "1.0.0"

# pandera's names for its built-in checks -> the suffix of our rule name
_CHECK_SUFFIX = {
    "greater_than": "gt",
    "greater_than_or_equal_to": "ge",
    "less_than": "lt",
    "less_than_or_equal_to": "le",
    "in_range": "in_range",
    "isin": "isin",
    "notin": "notin",
    "str_length": "length",
    "str_matches": "matches",
    "equal_to": "eq",
    "not_equal_to": "ne",
}


@dataclass(frozen=True)
class Reference:
    column: str
    table: str
    table_column: str
    severity: Severity = ERROR

    @property
    def rule(self) -> str:
        return f"{self.column}_in_{self.table.replace('.', '_')}"


def reference(column: str, table: str, table_column: str, severity: Severity = ERROR) -> Reference:
    """`column` values must exist in `table.table_column` (nulls are not checked here)."""
    return Reference(column, table, table_column, severity)


@dataclass(frozen=True)
class Acknowledgement:
    """A known defect a team accepts until `expires` (inclusive): the rule passes meanwhile, saying so."""

    rule: str
    note: str
    expires: date

    def active(self, today: date | None = None) -> bool:
        return (today or date.today()) <= self.expires

    def describe(self) -> str:
        return f"{self.note} (acknowledged until {self.expires.isoformat()})"


def acknowledge(rule: str, note: str, expires: str) -> Acknowledgement:
    """Acknowledge a known defect of a table's rule `rule` until `expires` (YYYY-MM-DD, inclusive)."""
    if not note.strip():
        raise ValueError(f"acknowledging {rule}: say why in a note")
    return Acknowledgement(rule, note, date.fromisoformat(expires))


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    description: str
    column: str | None = None
    quarantine: bool = False
    """Failing rows go to quarantine instead of failing the write."""
    row_level: bool = True
    """False for rules about the table as a whole (schema, drift, row count)."""
    max_failure_rate: float = 0.0
    """The share of a partition's rows that may fail the rule while it passes (see the module docstring)."""
    acknowledgement: Acknowledgement | None = None

    @property
    def check(self) -> str:
        """The Dagster asset check that reports this rule: one per behaviour, so every table has at most
        `contract` (its blocking rules), `quarantine` and `warnings` (plus `anomalies`, the monitors'). Each
        Dagster check costs two event-log writes per partition and run, and a year's range pays for every
        check 365 times; the check's metadata (and its alert) names the rules that failed, and each rule
        stays separate in quality.check_results, quality.failures and OpenLineage."""
        return CHECK_OF_BEHAVIOUR[self.behaviour]

    @property
    def behaviour(self) -> Behaviour:
        """What a failure does: blocking, quarantine or warn (see the module docstring)."""
        if self.quarantine:
            return QUARANTINE
        return BLOCKING if self.severity == ERROR else WARN


SOURCE_COVERAGE = Rule(
    SOURCE_COVERAGE_RULE, WARN,
    "Every row of the source file has a valid date inside the daily partitions; one that has none is "
    "counted, recorded with its file and line, and kept out.",
    quarantine=True,
)


def column_check_rule(column: str, check: pa.Check) -> str:
    return f"{column}_{_CHECK_SUFFIX.get(check.name, check.name)}"


def _describe(check: pa.Check) -> str:
    stats = ", ".join(f"{k}={v}" for k, v in (check.statistics or {}).items())
    return f"{check.name}({stats})" if stats else str(check.name)


def contract_metadata(model: type[pa.DataFrameModel]) -> dict:
    """The contract's `Config.metadata` (empty when its Config has none)."""
    return getattr(model.Config, "metadata", None) or {}


def rules_of(model: type[pa.DataFrameModel]) -> list[Rule]:
    """Every rule of a contract, in a stable order, so Dagster can list them before any run."""
    schema = model.to_schema()
    meta = contract_metadata(model)
    warn, quarantined = set(meta.get("warn", [])), set(meta.get("quarantine", []))
    rules = [Rule(SCHEMA_RULE, ERROR, "Every declared column is present and parses as its type.", row_level=False)]
    for name, column in schema.columns.items():
        cmeta = column.metadata or {}
        quarantine = cmeta.get("on_fail") == QUARANTINE
        severity: Severity = WARN if quarantine else cmeta.get("severity", ERROR)
        if not column.nullable:
            rules.append(Rule(f"{name}_not_null", severity, f"{name} is never null.", name, quarantine))
        if column.unique:
            rules.append(Rule(f"{name}_unique", ERROR, f"{name} is unique (a key).", name))
        for check in column.checks:
            rule = column_check_rule(name, check)
            rules.append(Rule(rule, severity, f"{name}: {_describe(check)}", name, quarantine))
    for check in schema.checks:
        doc = getattr(getattr(model, check.name, None), "__doc__", None) or check.name
        severity = WARN if check.name in warn | quarantined else ERROR
        rules.append(Rule(check.name, severity, " ".join(doc.split()), quarantine=check.name in quarantined))
    for ref in meta.get("references", []):
        described = f"{ref.column} exists in {ref.table}.{ref.table_column}."
        rules.append(Rule(ref.rule, ref.severity, described, ref.column))
    if table := meta.get("row_count_matches"):
        rules.append(Rule(f"row_count_matches_{table.replace('.', '_')}", ERROR,
                          f"Exactly one row per row of {table} for the partition.", row_level=False))
    rules.append(Rule(DRIFT_RULE, meta.get("drift", WARN),
                      "Columns and types are those of the previous version.", row_level=False))
    drop = f"row count does not drop to 0, or by more than {max_row_drop(model):.0%} of the previous version."
    described = f"The {drop}" if allow_empty(model) else f"The partition has rows; its {drop}"
    rules.append(Rule(VOLUME_RULE, ERROR, described, row_level=False))
    return _with_thresholds(rules, meta.get("max_failure_rate", {}), model.__name__)


def _with_thresholds(rules: list[Rule], thresholds: dict[str, float], contract: str) -> list[Rule]:
    by_name = {rule.name: rule for rule in rules}
    for name, share in thresholds.items():
        rule = by_name.get(name)
        if rule is None or not rule.row_level:
            raise ValueError(f"{contract}: max_failure_rate names {name!r}, which is not a row-level rule of it")
        if not 0 <= share < 1:
            raise ValueError(f"{contract}: max_failure_rate of {name} is {share}: a share of rows, from 0 to under 1")
        by_name[name] = replace(rule, max_failure_rate=float(share))
    return list(by_name.values())


def with_acknowledgements(rules: list[Rule], acknowledged: list[Acknowledgement], table: str) -> list[Rule]:
    """The rules, each with the acknowledgement that names it; an acknowledgement must name a rule that does not
    block."""
    by_name = {rule.name: rule for rule in rules}
    for ack in acknowledged:
        rule = by_name.get(ack.rule)
        if rule is None:
            raise ValueError(f"{table}: the acknowledgement names {ack.rule!r}, which is not one of its rules")
        if rule.behaviour == BLOCKING:
            raise ValueError(f"{table}: {ack.rule} blocks, and a blocking rule cannot be acknowledged (give it a "
                             "max_failure_rate, or make it warn)")
        by_name[ack.rule] = replace(rule, acknowledgement=ack)
    return list(by_name.values())


def max_row_drop(model: type[pa.DataFrameModel]) -> float:
    return float(contract_metadata(model).get("max_row_drop", DEFAULT_MAX_ROW_DROP))


def contract_version(model: type[pa.DataFrameModel]) -> str:
    """The contract's version, `Config.metadata["version"]` (semver): the version log, OpenLineage and the
    exported ODCS document name it; a breaking change raises its major part (`provline contract check`)."""
    return str(contract_metadata(model).get("version", DEFAULT_CONTRACT_VERSION))


def allow_empty(model: type[pa.DataFrameModel]) -> bool:
    return bool(contract_metadata(model).get("allow_empty", False))


def volume_problem(rows: int, previous_rows: int | None, max_drop: float, empty_allowed: bool = False) -> str | None:
    """Why a partition of `rows` rows must not replace its previous version of `previous_rows` (None: it has
    none), if it must not."""
    if rows == 0 and not previous_rows and not empty_allowed:
        return ("0 rows: nothing to write, its inputs hold no row for this partition (a partition that may be "
                "empty says so with Config.metadata[\"allow_empty\"] = True)")
    if previous_rows is None or previous_rows == 0:
        return None
    if rows == 0:
        return f"0 rows, the previous version had {previous_rows}: an empty delivery does not replace data"
    if rows < previous_rows * (1 - max_drop):
        return (f"{rows} rows, down {1 - rows / previous_rows:.0%} from {previous_rows} in the previous version "
                f"(more than the {max_drop:.0%} allowed by max_row_drop)")
    return None
