-- The whole purchase: reserve, then complete (order, payment, tickets in one transaction).
\set uid random(1, 2000)
\set tt random(1, 1000)
SELECT api.reserve_tickets(p_user_id => ('00000000-0000-4000-8000-' || lpad(:uid::text, 12, '0'))::uuid, p_ticket_type_id => ('20000000-0000-4000-8000-' || lpad(:tt::text, 12, '0'))::uuid, p_quantity => 2)->>'id' AS rid \gset
SELECT api.complete_booking(p_user_id => ('00000000-0000-4000-8000-' || lpad(:uid::text, 12, '0'))::uuid, p_reservation_id => :rid::uuid, p_payment_method => 'CARD');
