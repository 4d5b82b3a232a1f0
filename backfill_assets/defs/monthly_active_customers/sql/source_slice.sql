-- The source rows that can change a monthly_active_customers month M, for every M in
-- [$start, $end): all versions of the orders that have any version in M. When a re-sent order
-- moves from one month to another, its new version is in the slice of both.
WITH touched AS (
    SELECT DISTINCT CAST(date_trunc('month', order_ts) AS DATE) AS activity_month, order_id
    FROM raw.orders
    WHERE order_ts >= $start AND order_ts < $end
)
SELECT t.activity_month AS partition_start, 'raw.orders' AS source,
       o.ingested_at AS loaded_at, hash(o) AS row_hash
FROM touched AS t
JOIN raw.orders AS o USING (order_id)
