-- Referential integrity (warning): events whose plan_code is not in raw.plans. Both versions
-- leave them out, since they have no tier; this lists them so someone adds the plan.
-- The key is the event's UUID as text: the window check joins keys into its summary as text.
SELECT CAST(e.event_ts AS DATE) AS day, CAST(e.event_id AS VARCHAR) AS key
FROM raw.subscription_events AS e
WHERE e.event_ts >= $start AND e.event_ts < $end
  AND NOT EXISTS (SELECT 1 FROM raw.plans AS p WHERE p.plan_code = e.plan_code)
