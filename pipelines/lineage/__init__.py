"""OpenLineage for provline: naming, facets, the emitter, delivery (transports, outbox, replay)."""

from pipelines.lineage.delivery import ReplayResult, replay
from pipelines.lineage.emitter import LineageEmitter, main_replay

__all__ = ["LineageEmitter", "ReplayResult", "main_replay", "replay"]
