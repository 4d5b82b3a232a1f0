-- daily_billings, v2 logic: trial events are excluded; only paid activity counts.
-- Grain: one row per (billing_date, tier). Time column: billing_date = CAST(event_ts AS DATE),
-- UTC. Window: [$start, $end). Events whose plan_code is not in raw.plans have no tier and are
-- left out (the referential-integrity check lists them).
SELECT
    CAST(e.event_ts AS DATE) AS billing_date,
    p.tier,
    CAST(count(*) AS BIGINT) AS events,
    CAST(sum(e.amount) AS DECIMAL(18, 2)) AS billed
FROM raw.subscription_events AS e
JOIN raw.plans AS p USING (plan_code)
WHERE e.event_ts >= $start AND e.event_ts < $end AND NOT e.is_trial
GROUP BY ALL
