"""Placeholder: the factory's lineage calls for one step (wired to the emitter in the lineage issue)."""

from __future__ import annotations


class StepLineage:
    def started(self) -> None: ...
    def inputs_known(self, versions, source_path) -> None: ...
    def failed(self, error, stack, failed_rules) -> None: ...
    def completed(self, validation, receipt, frame) -> None: ...


def for_step(spec, context, partition) -> StepLineage:
    return StepLineage()
