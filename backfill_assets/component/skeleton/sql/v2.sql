-- __NAME__, v2 logic: test events are excluded. Window: [$start, $end).
SELECT
    CAST(event_ts AS DATE) AS event_date,
    category,
    count(*) AS events,
    CAST(sum(amount) AS DECIMAL(18, 2)) AS amount
FROM raw.events
WHERE event_ts >= $start AND event_ts < $end AND category <> 'test'
GROUP BY ALL
