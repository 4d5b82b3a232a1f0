-- daily_billings, legacy logic: every event counts, trial sign-ups included.
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
WHERE e.event_ts >= $start AND e.event_ts < $end
GROUP BY ALL
