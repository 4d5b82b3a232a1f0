-- The source rows that can change a daily_revenue day D, for every D in [$start, $end):
-- all versions of the orders that have any version on D or a refund on D, and their refunds.
-- When a re-sent order moves from day A to day B, its new version is in the slice of both days.
WITH touched AS (
    SELECT CAST(order_ts AS DATE) AS day, order_id
    FROM raw.orders
    WHERE order_ts >= $start AND order_ts < $end
    UNION
    SELECT CAST(refund_ts AS DATE), order_id
    FROM raw.refunds
    WHERE refund_ts >= $start AND refund_ts < $end
)
SELECT t.day AS partition_start, 'raw.orders' AS source, o.ingested_at AS loaded_at, hash(o) AS row_hash
FROM touched AS t
JOIN raw.orders AS o USING (order_id)
UNION ALL
SELECT t.day AS partition_start, 'raw.refunds' AS source, r.ingested_at AS loaded_at, hash(r) AS row_hash
FROM touched AS t
JOIN raw.refunds AS r USING (order_id)
