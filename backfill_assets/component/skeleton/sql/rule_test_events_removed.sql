-- Explained difference: test events leave v2. Returns the change it predicts, in the plan's
-- reconciliation grain (event_date and category here) and measures. Window: [$start, $end).
SELECT
    CAST(event_ts AS DATE) AS event_date,
    category,
    -count(*) AS events,
    -sum(amount) AS amount
FROM raw.events
WHERE event_ts >= $start AND event_ts < $end AND category = 'test'
GROUP BY ALL
