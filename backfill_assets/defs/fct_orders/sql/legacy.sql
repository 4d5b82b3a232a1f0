-- fct_orders, legacy logic.
-- Grain: one row per order_id (its latest version), on the latest version's UTC order day.
-- Versions tied on every sort key are told apart by a hash of the whole row: a rebuild picks
-- the same one however the rows are stored.
-- Window: [$start, $end). Every status included.
-- customer_segment is the customer's *current* segment, so history shows today's segment.
WITH latest AS (
    SELECT *
    FROM raw.orders AS o
    WHERE order_id IN (
        SELECT order_id FROM raw.orders WHERE order_ts >= $start AND order_ts < $end
    )
    QUALIFY row_number() OVER (
        PARTITION BY order_id ORDER BY ingested_at DESC, order_ts DESC, amount, status, hash(o)
    ) = 1
)
SELECT
    l.order_id,
    CAST(l.order_ts AS DATE) AS order_date,
    l.customer_id,
    l.region,
    l.status,
    l.amount,
    c.segment AS customer_segment
FROM latest AS l
LEFT JOIN raw.customers AS c
    ON c.customer_id = l.customer_id AND c.valid_to IS NULL
WHERE l.order_ts >= $start AND l.order_ts < $end
