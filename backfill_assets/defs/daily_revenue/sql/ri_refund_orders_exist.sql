-- Referential integrity (warning): refunds whose order does not exist in raw.orders.
-- Both versions ignore them; this lists them so someone looks. The `model` relation is the
-- version being checked; this rule reads only the sources of its days.
SELECT CAST(r.refund_ts AS DATE) AS day, CAST(r.refund_id AS VARCHAR) AS key
FROM raw.refunds AS r
WHERE r.refund_ts >= $start AND r.refund_ts < $end
  AND NOT EXISTS (SELECT 1 FROM raw.orders AS o WHERE o.order_id = r.order_id)
