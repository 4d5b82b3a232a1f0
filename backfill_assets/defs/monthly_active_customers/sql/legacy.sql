-- monthly_active_customers, legacy logic.
-- Grain: one row per (activity_month, region); NULL region is its own group.
-- Window: [$start, $end), first days of months. A customer is active in a month and region with
-- any order row there: re-sent versions count in their own month and region, every status
-- counts.
SELECT
    CAST(date_trunc('month', order_ts) AS DATE) AS activity_month,
    region,
    count(DISTINCT customer_id) AS active_customers
FROM raw.orders
WHERE order_ts >= $start AND order_ts < $end
GROUP BY ALL
