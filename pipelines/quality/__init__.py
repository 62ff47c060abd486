"""Data quality: a contract's rules (rules.py: the vocabulary contracts are written in), the one-scan SQL
runner that checks them inside DuckDB (runner.py), what the rules read from the warehouse (reads.py),
and the verdict per partition — valid rows, quarantined rows, failure cases, results (validate.py)."""

from pipelines.quality.reads import MissingTable, expected_rows, reference_values
from pipelines.quality.rules import (
    BLOCKING,
    ERROR,
    QUARANTINE,
    SOURCE_COVERAGE,
    SOURCE_COVERAGE_RULE,
    WARN,
    Acknowledgement,
    Rule,
    acknowledge,
    contract_metadata,
    contract_version,
    reference,
    rules_of,
    with_acknowledgements,
)
from pipelines.quality.sql_rules import rows_passing, sql_check
from pipelines.quality.validate import (
    QUARANTINE_REASONS,
    ContractViolation,
    RuleResult,
    Validation,
    describe_case,
    describe_failures,
    group_by_check,
    validate,
)

__all__ = [
    "BLOCKING", "ERROR", "QUARANTINE", "QUARANTINE_REASONS", "SOURCE_COVERAGE", "SOURCE_COVERAGE_RULE", "WARN",
    "Acknowledgement", "ContractViolation", "MissingTable", "Rule", "RuleResult", "Validation", "acknowledge",
    "contract_metadata", "contract_version", "describe_case", "describe_failures", "expected_rows", "group_by_check",
    "reference", "reference_values", "rows_passing", "rules_of", "sql_check", "validate", "with_acknowledgements",
]
