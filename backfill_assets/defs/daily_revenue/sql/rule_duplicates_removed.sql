-- Explained difference: duplicates removed.
-- Legacy counts every re-sent version of an order; v2 counts only the latest. Each version that
-- is not the latest takes its order and amount away, on its own day and region.
-- Only re-sent orders (more than one version, one of them in the window) have such versions,
-- so only they are ranked.
-- Versions are ranked exactly as the version SQL ranks them, the whole-row hash breaking ties.
WITH resent AS (
    SELECT order_id
    FROM raw.orders
    GROUP BY order_id
    HAVING count(*) > 1 AND bool_or(order_ts >= $start AND order_ts < $end)
),
ranked AS (
    SELECT
        o.*,
        row_number() OVER (
            PARTITION BY o.order_id
            ORDER BY o.ingested_at DESC, o.order_ts DESC, o.amount, o.status, hash(o)
        ) AS newest_first
    FROM raw.orders AS o
    JOIN resent USING (order_id)
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
