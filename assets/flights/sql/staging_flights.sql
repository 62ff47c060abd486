-- One row per scheduled flight: keyed, with cancelled/diverted flags and departure timestamps (local).
-- flight_id is 16 hex characters of sha256(date|carrier|flight|origin|sched_dep_time): stable everywhere.
-- HHMM times are minutes past local midnight (2400 is the next midnight). time_hour is ISO 8601 UTC text,
-- stored as a naive UTC timestamp (the warehouse's session is in UTC). The days are [$partition_start,
-- $partition_end): one or a range.
WITH f AS (
    SELECT *, make_date("year", "month", "day") AS flight_date
    FROM raw.flights
    WHERE make_date("year", "month", "day") >= $partition_start AND make_date("year", "month", "day") < $partition_end
)
SELECT
    substr(sha256(strftime(flight_date, '%Y-%m-%d') || '|' || carrier || '|' || CAST(flight AS VARCHAR) || '|'
                  || origin || '|' || CAST(sched_dep_time AS VARCHAR)), 1, 16) AS flight_id,
    flight_date,
    carrier,
    flight,
    upper(trim(tailnum)) AS tailnum,
    origin,
    dest,
    sched_dep_time,
    dep_time,
    dep_delay,
    sched_arr_time,
    arr_time,
    arr_delay,
    air_time,
    distance,
    CAST(flight_date AS TIMESTAMP) + to_minutes((sched_dep_time // 100) * 60 + sched_dep_time % 100)
        AS scheduled_departure,
    CAST(flight_date AS TIMESTAMP) + to_minutes((sched_dep_time // 100) * 60 + sched_dep_time % 100)
        + to_microseconds(CAST(dep_delay * 60000000 AS BIGINT)) AS actual_departure,
    CAST(CAST(time_hour AS TIMESTAMPTZ) AS TIMESTAMP) AS time_hour,
    dep_time IS NULL AS cancelled,
    dep_time IS NOT NULL AND arr_time IS NULL AS diverted
FROM f
