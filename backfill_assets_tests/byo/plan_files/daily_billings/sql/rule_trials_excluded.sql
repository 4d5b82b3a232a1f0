-- Explained difference: trial events leave v2. Each trial event of a known plan takes its
-- event and its amount away from its own day and tier. Window: [$start, $end).
SELECT
    CAST(e.event_ts AS DATE) AS billing_date,
    p.tier,
    -count(*) AS events,
    -sum(e.amount) AS billed
FROM raw.subscription_events AS e
JOIN raw.plans AS p USING (plan_code)
WHERE e.event_ts >= $start AND e.event_ts < $end AND e.is_trial
GROUP BY ALL
