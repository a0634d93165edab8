-- Reserve on a hot ticket type whose holds expire after 2 s (PGOPTIONS sets booking.hold_period),
-- run together with expire.sql: expiry and reclaim compete with live traffic for the same row.
\set uid random(1, 2000)
SELECT api.reserve_tickets(p_user_id => ('00000000-0000-4000-8000-' || lpad(:uid::text, 12, '0'))::uuid, p_ticket_type_id => '30000000-0000-4000-8000-000000000001', p_quantity => 1);
