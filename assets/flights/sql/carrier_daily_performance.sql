-- Carrier x day. On time = arrival delay <= 15 minutes, among flights that arrived.
SELECT
    flight_date,
    carrier,
    any_value(airline_name) AS airline_name,
    count(*) AS flights,
    count(*) FILTER (WHERE cancelled) AS cancelled,
    avg(CASE WHEN arr_delay <= 15 THEN 1.0 ELSE 0.0 END) FILTER (WHERE arr_delay IS NOT NULL) AS on_time_rate,
    avg(dep_delay) AS mean_dep_delay,
    avg(arr_delay) AS mean_arr_delay
FROM marts.flight_facts
WHERE flight_date >= $partition_start AND flight_date < $partition_end
GROUP BY flight_date, carrier
