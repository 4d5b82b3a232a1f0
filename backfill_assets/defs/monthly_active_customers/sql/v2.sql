-- monthly_active_customers, v2 logic.
-- Grain: one row per (activity_month, region); NULL region is its own group.
-- Window: [$start, $end), first days of months. A customer is active in a month and region with
-- a kept order there: the order's latest version (greatest ingested_at), whose status is neither
-- cancelled nor test, placed in that month and region.
WITH touched AS (
    SELECT order_id FROM raw.orders WHERE order_ts >= $start AND order_ts < $end
),
latest AS (
    SELECT *
    FROM raw.orders AS o
    WHERE order_id IN (SELECT order_id FROM touched)
    QUALIFY row_number() OVER (
        PARTITION BY order_id ORDER BY ingested_at DESC, order_ts DESC, amount, status, hash(o)
    ) = 1
)
SELECT
    CAST(date_trunc('month', order_ts) AS DATE) AS activity_month,
    region,
    count(DISTINCT customer_id) AS active_customers
FROM latest
WHERE status NOT IN ('cancelled', 'test') AND order_ts >= $start AND order_ts < $end
GROUP BY ALL
