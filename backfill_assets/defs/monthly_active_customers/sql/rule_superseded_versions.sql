-- Explained difference: superseded versions.
-- Customers active in legacy at a month and region but not in v2, all of whose order rows there
-- belong to kept orders whose latest version is in another month or region (a re-send moved
-- them): each takes one active customer away.
-- Together with the other rule, every (customer, month, region) that legacy counts and v2 does
-- not is counted exactly once; v2 never counts one that legacy does not (its row is a row).
WITH legacy_rows AS (
    SELECT customer_id, CAST(date_trunc('month', order_ts) AS DATE) AS activity_month, region,
           order_id
    FROM raw.orders
    WHERE order_ts >= $start AND order_ts < $end AND customer_id IS NOT NULL
),
latest AS (
    SELECT order_id, customer_id, CAST(date_trunc('month', order_ts) AS DATE) AS activity_month,
           region, status
    FROM raw.orders AS o
    WHERE order_id IN (SELECT order_id FROM legacy_rows)
    QUALIFY row_number() OVER (
        PARTITION BY order_id ORDER BY ingested_at DESC, order_ts DESC, amount, status, hash(o)
    ) = 1
),
kept AS (
    SELECT DISTINCT customer_id, activity_month, region
    FROM latest
    WHERE status NOT IN ('cancelled', 'test')
),
lost AS (
    SELECT r.customer_id, r.activity_month, r.region,
           bool_or(l.status IN ('cancelled', 'test')) AS has_excluded
    FROM legacy_rows AS r
    JOIN latest AS l USING (order_id)
    WHERE NOT EXISTS (
        SELECT 1 FROM kept AS k
        WHERE k.customer_id = r.customer_id
          AND k.activity_month = r.activity_month
          AND k.region IS NOT DISTINCT FROM r.region
    )
    GROUP BY r.customer_id, r.activity_month, r.region
)
SELECT activity_month, region, -count(*) AS active_customers
FROM lost
WHERE NOT has_excluded
GROUP BY ALL
