-- Reservations spread over 1000 ticket types.
\set uid random(1, 2000)
\set tt random(1, 1000)
SELECT api.reserve_tickets(p_user_id => ('00000000-0000-4000-8000-' || lpad(:uid::text, 12, '0'))::uuid, p_ticket_type_id => ('20000000-0000-4000-8000-' || lpad(:tt::text, 12, '0'))::uuid, p_quantity => 1);
