-- Origin x destination x day.
SELECT
    flight_date,
    origin,
    dest,
    count(*) AS flights,
    count(*) FILTER (WHERE cancelled) AS cancelled,
    count(DISTINCT carrier) AS carriers,
    avg(arr_delay) AS mean_arr_delay,
    max(distance) AS distance
FROM marts.flight_facts
WHERE flight_date >= $partition_start AND flight_date < $partition_end
GROUP BY flight_date, origin, dest
