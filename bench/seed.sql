-- Bench data: 2000 users, one hot ticket type, 1000 spread ones (100 events), one expiring one,
-- one capped one (its own event).
-- Deterministic ids so pgbench scripts and wrk scripts can name them. Inserted as the owner
-- (bench stock exceeds what api.create_ticket_type allows per type).
INSERT INTO users (id, email, password_hash, full_name)
SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'bench' || n || '@example.com', :'hash', 'Bench ' || n
  FROM generate_series(1, 2000) n;

INSERT INTO events (id, slug, name, location, start_time, end_time, status)
SELECT ('40000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'bench-event-' || n, 'Bench Event ' || n, 'Hanoi',
       now() + interval '30 days' + n * interval '1 hour', now() + interval '30 days 3 hours' + n * interval '1 hour', 'PUBLISHED'
  FROM generate_series(0, 100) n;

INSERT INTO ticket_types (id, event_id, name, price, initial_quantity, available_quantity)
VALUES ('10000000-0000-4000-8000-000000000001', '40000000-0000-4000-8000-000000000000', 'Hot', 500000, 100000000, 100000000),
       ('30000000-0000-4000-8000-000000000001', '40000000-0000-4000-8000-000000000000', 'Expiring', 500000, 100000000, 100000000);
INSERT INTO ticket_types (id, event_id, name, price, initial_quantity, available_quantity)
SELECT ('20000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
       ('40000000-0000-4000-8000-' || lpad((1 + (n - 1) / 10)::text, 12, '0'))::uuid,
       'Type ' || n, 100000 + n, 1000000, 1000000
  FROM generate_series(1, 1000) n;
-- A capped onsale (issue 9): at most 4 seats of the type and 8 of the event per buyer.
INSERT INTO events (id, slug, name, location, start_time, end_time, status, max_tickets_per_user)
VALUES ('40000000-0000-4000-8000-000000009999', 'bench-capped', 'Bench Capped', 'Hanoi',
        now() + interval '60 days', now() + interval '60 days 3 hours', 'PUBLISHED', 8);
INSERT INTO ticket_types (id, event_id, name, price, initial_quantity, available_quantity, max_per_user)
VALUES ('50000000-0000-4000-8000-000000000001', '40000000-0000-4000-8000-000000009999', 'Capped', 500000, 100000000, 100000000, 4);
ANALYZE users, events, ticket_types;
