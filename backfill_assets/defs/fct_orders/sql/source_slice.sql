-- The source rows that can change an fct_orders day D, for every D in [$start, $end):
-- all versions of the orders that have any version on D, and the segment history of their
-- customers.
WITH touched AS (
    SELECT DISTINCT CAST(order_ts AS DATE) AS day, order_id
    FROM raw.orders
    WHERE order_ts >= $start AND order_ts < $end
),
versions AS (
    SELECT t.day, o.customer_id, o.ingested_at AS loaded_at, hash(o) AS row_hash
    FROM touched AS t
    JOIN raw.orders AS o USING (order_id)
),
customers_of_day AS (
    SELECT DISTINCT day, customer_id FROM versions
)
SELECT day AS partition_start, 'raw.orders' AS source, loaded_at, row_hash
FROM versions
UNION ALL
SELECT d.day AS partition_start, 'raw.customers' AS source, CAST(NULL AS TIMESTAMP) AS loaded_at, hash(c) AS row_hash
FROM customers_of_day AS d
JOIN raw.customers AS c USING (customer_id)
