-- Referential integrity: every order's customer has a segment history row valid by the end of
-- the order's day. `model` is the version being checked.
WITH first_valid AS (
    SELECT customer_id, min(valid_from) AS valid_from
    FROM raw.customers
    GROUP BY customer_id
)
SELECT m.order_date AS day, CAST(m.order_id AS VARCHAR) AS key
FROM model AS m
LEFT JOIN first_valid AS c USING (customer_id)
WHERE m.order_date >= $start AND m.order_date < $end
  AND (c.valid_from IS NULL OR c.valid_from >= m.order_date + INTERVAL 1 DAY)
