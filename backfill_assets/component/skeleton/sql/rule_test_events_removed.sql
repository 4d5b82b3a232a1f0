-- Explained difference: test events leave v2. Returns the change it predicts, per row: the
-- partition column (event_date), the reconciliation's column groups (category) and every
-- measure (events, amount); the project sums them by month and category like the versions'
-- rows. Window: [$start, $end).
SELECT
    CAST(event_ts AS DATE) AS event_date,
    category,
    -count(*) AS events,
    -sum(amount) AS amount
FROM raw.events
WHERE event_ts >= $start AND event_ts < $end AND category = 'test'
GROUP BY ALL
