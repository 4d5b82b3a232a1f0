-- daily_revenue, legacy logic.
-- Grain: one row per (order_date, region); NULL region is its own group.
-- Time column: order_date = CAST(order_ts AS DATE), UTC. Window: [$start, $end).
-- Every raw order row counts (re-sent versions count again), every status included, each row on
-- its own day and region. A refund is subtracted on the day and in the region of the
-- first-ingested version of its order. Versions tied on every sort key are told apart by a hash
-- of the whole row, so the choice never depends on how the rows are stored (the v2 SQL and the
-- explained-difference rules rank the same way).
WITH first_version AS (
    SELECT *
    FROM raw.orders AS o
    WHERE order_id IN (
        SELECT order_id FROM raw.orders WHERE order_ts >= $start AND order_ts < $end
    )
    QUALIFY row_number() OVER (
        PARTITION BY order_id ORDER BY ingested_at ASC, order_ts ASC, amount, status, hash(o)
    ) = 1
),
order_rows AS (
    SELECT CAST(order_ts AS DATE) AS order_date, region, 1 AS orders, amount AS gross, 0 AS refund
    FROM raw.orders
    WHERE order_ts >= $start AND order_ts < $end
),
refund_rows AS (
    SELECT CAST(f.order_ts AS DATE), f.region, 0, 0, r.amount
    FROM raw.refunds AS r
    JOIN first_version AS f USING (order_id)
    WHERE f.order_ts >= $start AND f.order_ts < $end
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
