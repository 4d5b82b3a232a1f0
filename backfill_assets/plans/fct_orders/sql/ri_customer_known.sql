-- Referential integrity: every order's customer has a segment history row valid by the end of
-- the order's day. `model` is the version being checked.
SELECT m.order_date AS day, CAST(m.order_id AS VARCHAR) AS key
FROM model AS m
WHERE m.order_date >= $start AND m.order_date < $end
  AND NOT EXISTS (
      SELECT 1
      FROM raw.customers AS c
      WHERE c.customer_id = m.customer_id
        AND c.valid_from < m.order_date + INTERVAL 1 DAY
  )
