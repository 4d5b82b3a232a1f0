-- daily_revenue, v2 logic.
-- Grain: one row per (order_date, region); NULL region is its own group.
-- Time column: order_date = CAST(order_ts AS DATE) of the order's latest version, UTC.
-- Window: [$start, $end).
-- Only the latest version of each order counts (greatest ingested_at). Orders whose latest status
-- is cancelled or test are excluded, with their refunds. A refund is subtracted on the refund's
-- own day, in the region of the order's latest version.
-- Versions tied on every sort key are told apart by a hash of the whole row, so the choice never
-- depends on how the rows are stored (legacy and the explained-difference rules rank the same way).
-- The orders a window needs are those with a version or a refund in it (a semi-join: DuckDB
-- reads only the row groups their ids fall in, not the whole history).
WITH touched AS (
    SELECT order_id FROM raw.orders WHERE order_ts >= $start AND order_ts < $end
    UNION ALL
    SELECT order_id FROM raw.refunds WHERE refund_ts >= $start AND refund_ts < $end
),
latest AS (
    SELECT *
    FROM raw.orders AS o
    WHERE order_id IN (SELECT order_id FROM touched)
    QUALIFY row_number() OVER (
        PARTITION BY order_id ORDER BY ingested_at DESC, order_ts DESC, amount, status, hash(o)
    ) = 1
),
kept AS (
    SELECT * FROM latest WHERE status NOT IN ('cancelled', 'test')
),
order_rows AS (
    SELECT CAST(order_ts AS DATE) AS order_date, region, 1 AS orders, amount AS gross, 0 AS refund
    FROM kept
    WHERE order_ts >= $start AND order_ts < $end
),
refund_rows AS (
    SELECT CAST(r.refund_ts AS DATE), k.region, 0, 0, r.amount
    FROM raw.refunds AS r
    JOIN kept AS k USING (order_id)
    WHERE r.refund_ts >= $start AND r.refund_ts < $end
)
SELECT
    order_date,
    region,
    CAST(sum(orders) AS BIGINT) AS orders,
    CAST(sum(gross) AS DECIMAL(18, 2)) AS gross_revenue,
    CAST(sum(refund) AS DECIMAL(18, 2)) AS refunds,
    CAST(sum(gross) - sum(refund) AS DECIMAL(18, 2)) AS net_revenue
FROM (SELECT * FROM order_rows UNION ALL SELECT * FROM refund_rows)
GROUP BY order_date, region
