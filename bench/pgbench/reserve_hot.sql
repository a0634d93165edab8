-- Everyone wants the same ticket type: one reservation per transaction (api.reserve_tickets).
\set uid random(1, 2000)
SELECT api.reserve_tickets(p_user_id => ('00000000-0000-4000-8000-' || lpad(:uid::text, 12, '0'))::uuid, p_ticket_type_id => '10000000-0000-4000-8000-000000000001', p_quantity => 1);
