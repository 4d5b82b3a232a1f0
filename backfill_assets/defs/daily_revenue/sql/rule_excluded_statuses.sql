-- Explained difference: excluded statuses.
-- v2 drops orders whose latest status is cancelled or test, with their refunds. The order leaves
-- its latest version's day and region; its refunds leave the day and region where legacy put
-- them (the first-ingested version's).
-- Only orders with some version cancelled or test can end that way, so only they are ranked.
-- Versions are ranked exactly as the version SQL ranks them, the whole-row hash breaking ties.
WITH suspects AS (
    SELECT DISTINCT order_id
    FROM raw.orders
    WHERE status IN ('cancelled', 'test')
      AND order_id IN (
          SELECT order_id FROM raw.orders WHERE order_ts >= $start AND order_ts < $end
      )
),
versions AS (
    SELECT
        o.*,
        row_number() OVER (
            PARTITION BY o.order_id
            ORDER BY o.ingested_at DESC, o.order_ts DESC, o.amount, o.status, hash(o)
        ) AS newest_first,
        row_number() OVER (
            PARTITION BY o.order_id
            ORDER BY o.ingested_at ASC, o.order_ts ASC, o.amount, o.status, hash(o)
        ) AS oldest_first
    FROM raw.orders AS o
    JOIN suspects USING (order_id)
),
excluded AS (
    SELECT order_id FROM versions
    WHERE newest_first = 1 AND status IN ('cancelled', 'test')
),
order_part AS (
    SELECT CAST(order_ts AS DATE) AS order_date, region, -1 AS orders, -amount AS gross, 0 AS refund
    FROM versions
    WHERE newest_first = 1 AND status IN ('cancelled', 'test')
      AND order_ts >= $start AND order_ts < $end
),
refund_part AS (
    SELECT CAST(f.order_ts AS DATE), f.region, 0, 0, -r.amount
    FROM raw.refunds AS r
    JOIN versions AS f ON f.order_id = r.order_id AND f.oldest_first = 1
    WHERE r.order_id IN (SELECT order_id FROM excluded)
      AND f.order_ts >= $start AND f.order_ts < $end
)
SELECT
    order_date,
    region,
    sum(orders) AS orders,
    sum(gross) AS gross_revenue,
    sum(refund) AS refunds,
    sum(gross) - sum(refund) AS net_revenue
FROM (SELECT * FROM order_part UNION ALL SELECT * FROM refund_part)
GROUP BY ALL
