-- Maintenance: expiry and cleanup (scheduled by pg_cron, see sql/cron_jobs.sql), invariants.

CREATE OR REPLACE FUNCTION api.expire_reservations()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_ticket_type_id uuid;
  v_released integer := 0;
BEGIN
  -- Ticket types in id order (the project's lock order), skipping any that live traffic
  -- holds right now: such a type is retried on the next run, and its own reserves reclaim
  -- dead holds when short. Nothing here ever waits, so it can neither deadlock nor block.
  FOR v_ticket_type_id IN
    SELECT tt.id
      FROM ticket_types tt
     WHERE tt.id IN (SELECT r.ticket_type_id FROM order_reservations r
                      WHERE r.status = 'ACTIVE' AND r.expires_at <= now())
     ORDER BY tt.id
     LIMIT 1000
       FOR NO KEY UPDATE SKIP LOCKED
  LOOP
    v_released := v_released + internal.reclaim_expired_holds(v_ticket_type_id);
  END LOOP;
  RETURN v_released;
END;
$$;
COMMENT ON FUNCTION api.expire_reservations() IS
  '(DBA-only) Releases expired ACTIVE holds back to stock (status EXPIRED) and returns how '
  'many holds it released. pg_cron runs it every minute. Locks ticket_types rows in id order '
  'and reservation rows with SKIP LOCKED: never waits, never deadlocks with live traffic; '
  'what it skips it releases on a later run. At most 1000 ticket types per call.';


CREATE OR REPLACE FUNCTION api.cleanup_reservations(p_older_than interval DEFAULT '30 days')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_batch integer;
  v_deleted integer := 0;
BEGIN
  IF p_older_than IS NULL OR p_older_than < interval '1 day' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'p_older_than must be at least 1 day';
  END IF;
  -- Batches keep each statement short; finished holds are cold rows nobody else locks, and
  -- SKIP LOCKED makes sure of it. Orders keep their data (reservation_id becomes NULL).
  LOOP
    DELETE FROM order_reservations
     WHERE id IN (SELECT id FROM order_reservations
                   WHERE status IN ('COMPLETED', 'EXPIRED', 'CANCELLED')
                     AND created_at < now() - p_older_than
                   LIMIT 5000
                     FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_batch = ROW_COUNT;
    v_deleted := v_deleted + v_batch;
    EXIT WHEN v_batch < 5000;
  END LOOP;
  RETURN v_deleted;
END;
$$;
COMMENT ON FUNCTION api.cleanup_reservations(interval) IS
  '(DBA-only) Deletes COMPLETED, EXPIRED and CANCELLED holds created more than p_older_than '
  '(default 30 days) ago, in batches of 5000; orders that pointed to them keep everything '
  'else (reservation_id set NULL). pg_cron runs it daily at 02:00. Returns rows deleted. '
  'Never touches ACTIVE holds or ticket types. Raises BKVAL.';


CREATE OR REPLACE FUNCTION api.check_invariants()
RETURNS TABLE (check_name text, subject_id uuid, detail text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  WITH held AS (
    SELECT ticket_type_id, sum(quantity) AS seats
      FROM order_reservations WHERE status = 'ACTIVE' GROUP BY ticket_type_id
  ), sold AS (
    SELECT i.ticket_type_id, sum(i.quantity) AS seats
      FROM order_items i JOIN orders o ON o.id = i.order_id
     WHERE o.status IN ('PENDING', 'PAID')
        OR (o.status IN ('REFUND_PENDING', 'REFUNDED') AND o.seats_kept)  -- refunded after the start
     GROUP BY i.ticket_type_id
  ), issued AS (
    SELECT order_id, count(*) AS tickets FROM tickets GROUP BY order_id
  ), ordered AS (
    SELECT order_id, sum(quantity) AS seats, sum(quantity * unit_price) AS amount
      FROM order_items GROUP BY order_id
  )
  SELECT 'stock_balance', tt.id,
         format('available %s + held %s + sold %s <> initial %s', tt.available_quantity,
                coalesce(h.seats, 0), coalesce(s.seats, 0), tt.initial_quantity)
    FROM ticket_types tt
    LEFT JOIN held h ON h.ticket_type_id = tt.id
    LEFT JOIN sold s ON s.ticket_type_id = tt.id
   WHERE tt.available_quantity + coalesce(h.seats, 0) + coalesce(s.seats, 0) <> tt.initial_quantity
  UNION ALL
  SELECT 'stock_range', tt.id,
         format('available %s outside 0..%s', tt.available_quantity, tt.initial_quantity)
    FROM ticket_types tt
   WHERE tt.available_quantity < 0 OR tt.available_quantity > tt.initial_quantity
  UNION ALL
  SELECT 'tickets_issued', o.id,
         format('order has %s tickets for %s seats', coalesce(t.tickets, 0), coalesce(x.seats, 0))
    FROM orders o
    LEFT JOIN issued t ON t.order_id = o.id
    LEFT JOIN ordered x ON x.order_id = o.id
   WHERE o.status = 'PAID' AND coalesce(t.tickets, 0) <> coalesce(x.seats, 0)
  UNION ALL
  SELECT 'order_total', o.id,
         format('total %s, items %s, payment %s', o.total_amount, x.amount, p.amount)
    FROM orders o
    LEFT JOIN ordered x ON x.order_id = o.id
    LEFT JOIN payments p ON p.order_id = o.id
   WHERE o.status = 'PAID'
     AND (o.total_amount IS DISTINCT FROM x.amount OR p.amount IS DISTINCT FROM o.total_amount
          OR p.status IS DISTINCT FROM 'SUCCESS')
  UNION ALL
  -- Issue 12: a refund (pending or done) leaves no ticket usable.
  SELECT 'refund_tickets', o.id, format('%s order has %s UNUSED tickets', o.status, count(*))
    FROM orders o JOIN tickets t ON t.order_id = o.id
   WHERE o.status IN ('REFUND_PENDING', 'REFUNDED') AND t.status = 'UNUSED'
   GROUP BY o.id, o.status
  UNION ALL
  -- Orders that never became PAID have no tickets at all.
  SELECT 'unpaid_tickets', o.id, format('%s order has %s tickets', o.status, count(*))
    FROM orders o JOIN tickets t ON t.order_id = o.id
   WHERE o.status IN ('PENDING', 'CANCELLED', 'TIMEOUT')
   GROUP BY o.id, o.status
  UNION ALL
  -- The money of a refunded order went back; one still refunding has its money in.
  SELECT 'refund_payment', o.id, format('%s order, payment %s', o.status, p.status)
    FROM orders o LEFT JOIN payments p ON p.order_id = o.id
   WHERE (o.status = 'REFUNDED' AND p.status IS DISTINCT FROM 'REFUNDED')
      OR (o.status = 'REFUND_PENDING' AND p.status IS DISTINCT FROM 'SUCCESS')
  UNION ALL
  SELECT 'refund_missing', o.id, 'REFUND_PENDING order without a pending refund'
    FROM orders o
   WHERE o.status = 'REFUND_PENDING'
     AND NOT EXISTS (SELECT 1 FROM payment_refunds r
                      WHERE r.order_id = o.id AND r.reason NOT IN ('duplicate', 'wrong_amount') AND r.status = 'PENDING')
  UNION ALL
  -- The expiry job runs every minute and skips only what is locked at that moment.
  SELECT 'pending_overdue', o.id, format('PENDING since %s, deadline %s', o.created_at, o.payment_deadline)
    FROM orders o
   WHERE o.status = 'PENDING' AND o.payment_deadline < now() - interval '5 minutes'
$$;
COMMENT ON FUNCTION api.check_invariants() IS
  '(DBA-only) One row per violation, none when consistent: stock_balance (available + ACTIVE '
  'holds + sold <> initial), stock_range, tickets_issued (PAID order whose tickets <> seats), '
  'order_total (order, items and SUCCESS payment disagree), refund_tickets (REFUND_PENDING/REFUNDED '
  'order with UNUSED tickets), unpaid_tickets (PENDING/CANCELLED/TIMEOUT order with tickets), '
  'refund_payment (REFUNDED order whose payment is not REFUNDED, REFUND_PENDING one whose payment '
  'is not SUCCESS), refund_missing (REFUND_PENDING without a pending refund), pending_overdue '
  '(PENDING more than 5 minutes past its payment deadline). Sold = PENDING + PAID orders + refunded '
  'ones whose seats were kept (event started). One snapshot; locks nothing.';
