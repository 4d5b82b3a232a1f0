-- Explained difference: refund timing moved.
-- Legacy subtracts a refund on the day and region of the order's first-ingested version; v2 on
-- the refund's own day, in the region of the order's latest version. For every refund of a kept
-- order (latest status neither cancelled nor test) the amount leaves the legacy place and
-- arrives at the v2 place; each side counts where its day is in the window.
-- Only orders with a refund matter, so only their versions are ranked.
-- Versions are ranked exactly as the version SQL ranks them, the whole-row hash breaking ties.
WITH refunded AS (
    SELECT DISTINCT order_id FROM raw.refunds
),
touched AS (
    SELECT order_id FROM raw.orders
    WHERE order_ts >= $start AND order_ts < $end
      AND order_id IN (SELECT order_id FROM refunded)
    UNION
    SELECT order_id FROM raw.refunds WHERE refund_ts >= $start AND refund_ts < $end
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
    JOIN touched USING (order_id)
),
kept_refunds AS (
    SELECT r.refund_ts, r.amount, f.order_ts AS first_ts, f.region AS first_region,
           l.region AS latest_region
    FROM raw.refunds AS r
    JOIN versions AS l ON l.order_id = r.order_id AND l.newest_first = 1
    JOIN versions AS f ON f.order_id = r.order_id AND f.oldest_first = 1
    WHERE l.status NOT IN ('cancelled', 'test')
),
moves AS (
    SELECT CAST(first_ts AS DATE) AS order_date, first_region AS region, -amount AS refund
    FROM kept_refunds
    WHERE first_ts >= $start AND first_ts < $end
    UNION ALL
    SELECT CAST(refund_ts AS DATE), latest_region, amount
    FROM kept_refunds
    WHERE refund_ts >= $start AND refund_ts < $end
)
SELECT
    order_date,
    region,
    0 AS orders,
    0 AS gross_revenue,
    sum(refund) AS refunds,
    -sum(refund) AS net_revenue
FROM moves
GROUP BY ALL
