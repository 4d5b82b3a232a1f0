-- The finance dashboard's monthly revenue tiles, exactly as the dashboard queries the published
-- view. The downstream_queries_work window check runs it against a candidate as if it were
-- published (and against the published version) before any promotion.
SELECT
    date_trunc('month', order_date) AS month,
    sum(orders) AS orders,
    sum(gross_revenue) AS gross_revenue,
    sum(refunds) AS refunds,
    sum(net_revenue) AS net_revenue
FROM analytics.daily_revenue
GROUP BY ALL
ORDER BY month
