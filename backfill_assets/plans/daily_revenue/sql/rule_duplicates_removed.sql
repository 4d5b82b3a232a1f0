-- Explained difference: duplicates removed.
-- Legacy counts every re-sent version of an order; v2 counts only the latest. Each version that
-- is not the latest takes its order and amount away, on its own day and region.
WITH ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY order_id ORDER BY ingested_at DESC, order_ts DESC, amount, status
        ) AS newest_first
    FROM raw.orders
    WHERE order_id IN (
        SELECT order_id FROM raw.orders WHERE order_ts >= $start AND order_ts < $end
    )
)
SELECT
    CAST(order_ts AS DATE) AS order_date,
    region,
    -count(*) AS orders,
    -sum(amount) AS gross_revenue,
    0 AS refunds,
    -sum(amount) AS net_revenue
FROM ranked
WHERE newest_first > 1 AND order_ts >= $start AND order_ts < $end
GROUP BY ALL
