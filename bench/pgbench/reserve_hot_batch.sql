-- The same hot ticket type, 50 requests per call (api.reserve_tickets_batch), as the gateway coalesces them.
\set uid random(1, 1950)
SELECT count(reservation) FROM api.reserve_tickets_batch(ARRAY(SELECT ROW(('00000000-0000-4000-8000-' || lpad((:uid + g)::text, 12, '0'))::uuid, '10000000-0000-4000-8000-000000000001'::uuid, 1)::api.reserve_request FROM generate_series(0, 49) g));
