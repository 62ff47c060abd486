-- One row per staging flight, with its airline, plane, airports and departure-hour weather.
-- Weather joins on the UTC scheduled hour, observed on the flight's own local day (quarantined
-- observations are not in staging.weather). The days are [$partition_start, $partition_end): one or a range.
SELECT
    f.flight_id,
    f.flight_date,
    f.carrier,
    a.name AS airline_name,
    f.flight,
    f.tailnum,
    p.manufacturer AS plane_manufacturer,
    p.model AS plane_model,
    p.year AS plane_year,
    f.origin,
    o.name AS origin_name,
    f.dest,
    d.name AS dest_name,
    f.scheduled_departure,
    f.actual_departure,
    f.cancelled,
    f.diverted,
    f.dep_delay,
    f.arr_delay,
    f.distance,
    w.temp,
    w.wind_speed,
    w.precip,
    w.visib,
    w.origin IS NOT NULL AS has_weather
FROM staging.flights AS f
LEFT JOIN staging.airlines AS a ON a.carrier = f.carrier
LEFT JOIN staging.planes AS p ON p.tailnum = f.tailnum
LEFT JOIN staging.airports AS o ON o.faa = f.origin
LEFT JOIN staging.airports AS d ON d.faa = f.dest
LEFT JOIN staging.weather AS w
    ON w.origin = f.origin AND w.time_hour = f.time_hour AND w.obs_date = f.flight_date
    AND w.obs_date >= $partition_start AND w.obs_date < $partition_end
WHERE f.flight_date >= $partition_start AND f.flight_date < $partition_end
