-- Delivery (issue 11): confirmation e-mails and organizers' webhooks through procrastinate's
-- job queue. A job is deferred in the same transaction as the change it announces (a paid
-- order, a check-in, a refund), so it exists if and only if the change committed. The worker
-- (worker/, role booking_worker) reads what to send with one call, sends with no transaction
-- open, and records the outcome with another (the "(worker)" functions below).
-- Lock order: a webhooks row before any of its webhook_deliveries rows (record_webhook_attempt's
-- GONE and delete_webhook); every other write here touches one row of one table.

-- Internal helpers (no SET clause, everything schema-qualified: see 00_internal.sql).

CREATE OR REPLACE FUNCTION internal.defer_job(
  p_task text, p_queue text, p_priority integer, p_args jsonb, p_lock text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
  -- The one place that names procrastinate's versioned defer function (upgrade: here).
  SELECT (public.procrastinate_defer_jobs_v1(ARRAY[
            ROW(p_queue, p_task, p_priority, p_lock, NULL, p_args, NULL)::public.procrastinate_job_to_defer_v1
          ]))[1]
$$;
COMMENT ON FUNCTION internal.defer_job(text, text, integer, jsonb, text) IS
  'Defers one procrastinate job (task, queue, priority: higher runs first, args, optional lock: '
  'two jobs with one lock never run at once) in the caller''s transaction; returns its id. '
  'No NOTIFY (migration 0010): idle workers poll every WORKER_POLL_SECONDS.';


CREATE OR REPLACE FUNCTION internal.notify_webhooks(p_type text, p_event_id uuid, p_data jsonb)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_webhook uuid;
  v_notification uuid;
  v_body text;
  v_delivery uuid;
  v_count integer := 0;
BEGIN
  IF p_type IS NULL OR p_type NOT IN ('order.paid', 'order.refunded', 'ticket.checked_in') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = format('unknown notification type %s', p_type);
  END IF;
  FOR v_webhook IN
    SELECT w.id FROM public.webhooks w
      JOIN public.users u ON u.id = w.created_by AND u.role = 'admin'  -- a demoted admin's hear nothing
     WHERE w.active AND p_type = ANY (w.events) AND (w.event_id IS NULL OR w.event_id = p_event_id)
     ORDER BY w.id
  LOOP
    IF v_body IS NULL THEN
      v_notification := gen_random_uuid();
      v_body := json_build_object('id', v_notification, 'type', p_type, 'created_at', now(), 'data', p_data)::text;
    END IF;
    v_delivery := gen_random_uuid();
    INSERT INTO public.webhook_deliveries (id, webhook_id, notification_id, event_type, body, job_id)
    VALUES (v_delivery, v_webhook, v_notification, p_type, v_body,
            internal.defer_job('deliver_webhook', 'webhooks', 50, jsonb_build_object('delivery_id', v_delivery)));
    v_count := v_count + 1;
  END LOOP;
  RETURN v_count;
END;
$$;
COMMENT ON FUNCTION internal.notify_webhooks(text, uuid, jsonb) IS
  'One notification (order.paid, order.refunded, ticket.checked_in) of event p_event_id: for every '
  'active webhook subscribed to p_type (all events, or this one) a webhook_deliveries row with the '
  'body {id, type, created_at, data} (one id per call: what receivers de-duplicate on) and a '
  'deliver_webhook job (queue webhooks, priority 50), in the caller''s transaction. Returns how '
  'many. With no webhooks: one indexed query.';


CREATE OR REPLACE FUNCTION internal.order_paid(p_order_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
  v_order public.orders;
  v_user public.users;
  v_event public.events;
BEGIN
  SELECT * INTO STRICT v_order FROM public.orders WHERE id = p_order_id;
  SELECT * INTO STRICT v_user FROM public.users WHERE id = v_order.user_id;
  INSERT INTO public.order_emails (order_id, kind, recipient, job_id)
  VALUES (p_order_id, 'confirmation', v_user.email,
          internal.defer_job('send_confirmation', 'mail', 100, jsonb_build_object('order_id', p_order_id),
                             'mail:' || p_order_id));

  -- The webhook body costs an order_json: build it only when someone subscribed.
  IF EXISTS (SELECT 1 FROM public.webhooks w WHERE w.active AND 'order.paid' = ANY (w.events)) THEN
    SELECT e.* INTO v_event
      FROM public.order_items i
      JOIN public.ticket_types tt ON tt.id = i.ticket_type_id
      JOIN public.events e ON e.id = tt.event_id
     WHERE i.order_id = p_order_id
     ORDER BY i.id LIMIT 1;
    PERFORM internal.notify_webhooks('order.paid', v_event.id,
      internal.order_json(v_order)::jsonb || jsonb_build_object(
        'event', jsonb_build_object('id', v_event.id, 'slug', v_event.slug, 'name', v_event.name,
                                    'start_time', v_event.start_time),
        'buyer', jsonb_build_object('id', v_user.id, 'email', v_user.email, 'full_name', v_user.full_name)));
  END IF;
END;
$$;
COMMENT ON FUNCTION internal.order_paid(uuid) IS
  'Everything announced when an order becomes PAID, in the caller''s transaction: its '
  'order_emails row (to the buyer) and send_confirmation job (queue mail, priority 100, lock '
  'mail:<order id>), and the order.paid webhooks (order JSON + event + buyer). Called by '
  'api.complete_booking (and whatever else makes an order PAID).';


-- The worker's calls (granted to booking_worker only: sql/worker_grants.sql, worker/calls.py).

CREATE OR REPLACE FUNCTION api.confirmation_email(p_order_id uuid)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_result json;
BEGIN
  SELECT json_build_object(
           'order_id', m.order_id,
           'recipient', m.recipient,
           'full_name', u.full_name,
           'sent_at', m.sent_at,
           'message_id', m.message_id,
           'attempts', m.attempts,
           'order', internal.order_json(o),
           'event', (SELECT json_build_object('id', e.id, 'slug', e.slug, 'name', e.name, 'location', e.location,
                                              'start_time', e.start_time, 'end_time', e.end_time)
                       FROM order_items i
                       JOIN ticket_types tt ON tt.id = i.ticket_type_id
                       JOIN events e ON e.id = tt.event_id
                      WHERE i.order_id = o.id
                      ORDER BY i.id LIMIT 1),
           'tickets', coalesce((SELECT json_agg(json_build_object('ticket_code', t.ticket_code,
                                                                  'ticket_type_name', tt.name,
                                                                  'status', t.status) ORDER BY t.ticket_code)
                                  FROM tickets t JOIN ticket_types tt ON tt.id = t.ticket_type_id
                                 WHERE t.order_id = o.id), '[]'::json))
    INTO v_result
    FROM order_emails m
    JOIN orders o ON o.id = m.order_id
    JOIN users u ON u.id = o.user_id
   WHERE m.order_id = p_order_id AND m.kind = 'confirmation';
  IF v_result IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'no confirmation e-mail for this order';
  END IF;
  RETURN v_result;
END;
$$;
COMMENT ON FUNCTION api.confirmation_email(uuid) IS
  '(worker) What the confirmation e-mail of an order says: {order_id, recipient, full_name, '
  'sent_at, message_id, attempts, order (order JSON), event {id, slug, name, location, '
  'start_time, end_time}, tickets [{ticket_code, ticket_type_name, status}]}. Locks nothing. '
  'Raises BKNTF (no such e-mail).';


CREATE OR REPLACE FUNCTION internal.record_email_attempt(p_order_id uuid, p_kind text, p_error text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  UPDATE public.order_emails SET attempts = attempts + 1, last_error = left(p_error, 2000)
   WHERE order_id = p_order_id AND kind = p_kind;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = format('no %s e-mail for this order', p_kind);
  END IF;
END;
$$;
COMMENT ON FUNCTION internal.record_email_attempt(uuid, text, text) IS
  'One attempt to send an order''s e-mail of a kind (confirmation, refund): attempts + 1, last_error '
  '= p_error (the first 2,000 characters; NULL clears it). Locks that order_emails row. Raises BKNTF.';


CREATE OR REPLACE FUNCTION internal.record_email_sent(p_order_id uuid, p_kind text, p_message_id text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  UPDATE public.order_emails SET sent_at = now(), message_id = p_message_id, last_error = NULL
   WHERE order_id = p_order_id AND kind = p_kind AND sent_at IS NULL;
  IF FOUND THEN
    RETURN true;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM public.order_emails WHERE order_id = p_order_id AND kind = p_kind) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = format('no %s e-mail for this order', p_kind);
  END IF;
  RETURN false;
END;
$$;
COMMENT ON FUNCTION internal.record_email_sent(uuid, text, text) IS
  'A server (or the mail folder) accepted an order''s e-mail of a kind: sets sent_at and message_id '
  'once and returns true; false when recorded before (the first time is kept). Locks that '
  'order_emails row. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.record_confirmation_attempt(p_order_id uuid, p_error text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  PERFORM internal.record_email_attempt(p_order_id, 'confirmation', p_error);
END;
$$;
COMMENT ON FUNCTION api.record_confirmation_attempt(uuid, text) IS
  '(worker) Records one attempt to send an order''s confirmation: attempts + 1, last_error = '
  'p_error (the first 2,000 characters; NULL clears it). Locks the order_emails row. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.record_confirmation_sent(p_order_id uuid, p_message_id text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  RETURN internal.record_email_sent(p_order_id, 'confirmation', p_message_id);
END;
$$;
COMMENT ON FUNCTION api.record_confirmation_sent(uuid, text) IS
  '(worker) Records that a server (or the mail folder) accepted an order''s confirmation: sets '
  'sent_at and message_id once and returns true; false when it was recorded before (the first '
  'time is kept). Does not count an attempt. Locks the order_emails row. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.webhook_delivery(p_delivery_id uuid)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_result json;
BEGIN
  SELECT json_build_object(
           'id', d.id, 'webhook_id', d.webhook_id, 'url', w.url, 'secret', w.secret, 'active', w.active,
           'event_type', d.event_type, 'notification_id', d.notification_id, 'body', d.body,
           'status', d.status, 'attempts', d.attempts, 'created_at', d.created_at)
    INTO v_result
    FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
   WHERE d.id = p_delivery_id;
  IF v_result IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook delivery not found';
  END IF;
  RETURN v_result;
END;
$$;
COMMENT ON FUNCTION api.webhook_delivery(uuid) IS
  '(worker) What one webhook delivery sends and where: {id, webhook_id, url, secret, active, '
  'event_type, notification_id, body (the exact bytes to send and sign), status, attempts, '
  'created_at}. Locks nothing. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.record_webhook_attempt(
  p_delivery_id uuid, p_outcome text, p_status_code integer, p_error text, p_duration_ms integer)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  v_delivery webhook_deliveries;
BEGIN
  IF p_outcome IS NULL OR p_outcome NOT IN ('DELIVERED', 'RETRY', 'GONE', 'REFUSED', 'FAILED') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'outcome must be one of DELIVERED, RETRY, GONE, REFUSED, FAILED';
  END IF;
  IF p_outcome = 'GONE' THEN
    -- The lock order: the webhook's row before its deliveries' (delete_webhook takes the same).
    -- NO KEY UPDATE: a purchase inserting a delivery (FOR KEY SHARE on the webhook) never waits.
    PERFORM 1 FROM webhooks w
     WHERE w.id = (SELECT d.webhook_id FROM webhook_deliveries d WHERE d.id = p_delivery_id)
       FOR NO KEY UPDATE;
  END IF;
  SELECT * INTO v_delivery FROM webhook_deliveries WHERE id = p_delivery_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook delivery not found';
  END IF;

  INSERT INTO webhook_attempts (delivery_id, attempt, duration_ms, status_code, error, outcome)
  VALUES (p_delivery_id, v_delivery.attempts + 1, p_duration_ms, p_status_code, left(p_error, 2000), p_outcome);
  UPDATE webhook_deliveries
     SET attempts = attempts + 1,
         status = CASE
                    WHEN p_outcome = 'DELIVERED' THEN 'DELIVERED'
                    WHEN p_outcome = 'RETRY' OR status = 'DELIVERED' THEN status
                    ELSE 'FAILED'
                  END,
         delivered_at = CASE WHEN p_outcome = 'DELIVERED' THEN coalesce(delivered_at, now()) ELSE delivered_at END
   WHERE id = p_delivery_id
  RETURNING * INTO v_delivery;

  IF p_outcome = 'GONE' THEN
    UPDATE webhooks
       SET active = false, disabled_at = now(), disabled_reason = 'the receiver answered 410 Gone'
     WHERE id = v_delivery.webhook_id AND active;
    UPDATE webhook_deliveries SET status = 'CANCELLED'
     WHERE webhook_id = v_delivery.webhook_id AND status = 'PENDING' AND id <> p_delivery_id;
  END IF;

  RETURN json_build_object(
    'id', v_delivery.id, 'webhook_id', v_delivery.webhook_id, 'notification_id', v_delivery.notification_id,
    'event_type', v_delivery.event_type, 'status', v_delivery.status, 'attempts', v_delivery.attempts,
    'created_at', v_delivery.created_at, 'delivered_at', v_delivery.delivered_at);
END;
$$;
COMMENT ON FUNCTION api.record_webhook_attempt(uuid, text, integer, text, integer) IS
  '(worker) Records one HTTP attempt of a delivery (attempt = attempts + 1, the answer''s status '
  'code, error, duration) and returns the delivery after it {id, webhook_id, notification_id, '
  'event_type, status, attempts, created_at, delivered_at}. p_outcome: DELIVERED (2xx: DELIVERED, '
  'delivered_at), RETRY (stays PENDING; the job retries), GONE (410: FAILED, the webhook disabled, '
  'its other PENDING deliveries CANCELLED), REFUSED (address not allowed: FAILED), FAILED (the last '
  'attempt). Locks the delivery row (GONE: the webhook''s row first). Raises BKVAL (outcome), BKNTF.';


CREATE OR REPLACE FUNCTION api.close_webhook_delivery(p_delivery_id uuid, p_status text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  IF p_status IS NULL OR p_status NOT IN ('CANCELLED', 'FAILED') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'status must be CANCELLED or FAILED';
  END IF;
  UPDATE webhook_deliveries SET status = p_status WHERE id = p_delivery_id AND status = 'PENDING';
  IF FOUND THEN
    RETURN true;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = p_delivery_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook delivery not found';
  END IF;
  RETURN false;
END;
$$;
COMMENT ON FUNCTION api.close_webhook_delivery(uuid, text) IS
  '(worker) Ends a PENDING delivery without an attempt: CANCELLED (its webhook was deleted or '
  'disabled after the notification was made) or FAILED (its job was given up, e.g. a stalled '
  'job on its last run). Returns false when it was not PENDING. Locks the delivery row. '
  'Raises BKVAL, BKNTF.';


-- Organizers' webhooks: the gateway's /admin/webhooks routes (granted to booking_gateway).

CREATE OR REPLACE FUNCTION api.create_webhook(
  p_user_id uuid, p_url text, p_events text[], p_event_id uuid DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_allowed CONSTANT text[] := ARRAY['order.paid', 'order.refunded', 'ticket.checked_in'];
  v_unknown text;
  v_webhook webhooks;
BEGIN
  IF p_url IS NULL OR char_length(p_url) > 2048 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'url is required and at most 2048 characters';
  END IF;
  IF p_url !~* '^https?://[^/?#@[:space:]]+([/?#][^[:space:][:cntrl:]]*)?$' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'url must be an http:// or https:// URL with a host (no spaces, no user:password@)';
  END IF;
  IF p_events IS NULL OR cardinality(p_events) = 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'events must name at least one of ' || array_to_string(v_allowed, ', ');
  END IF;
  SELECT string_agg(coalesce(x, 'null'), ', ') INTO v_unknown
    FROM unnest(p_events) x WHERE x IS NULL OR x <> ALL (v_allowed);
  IF v_unknown IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = format('unknown event type(s) %s; allowed: %s', v_unknown, array_to_string(v_allowed, ', '));
  END IF;
  IF p_event_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events WHERE id = p_event_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'event not found';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_user_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'user not found';
  END IF;

  INSERT INTO webhooks (created_by, url, events, event_id, secret)
  VALUES (p_user_id, p_url,
          ARRAY(SELECT x FROM unnest(v_allowed) x WHERE x = ANY (p_events)),  -- canonical order, no repeats
          p_event_id, 'whsec_' || encode(gen_random_bytes(24), 'hex'))
  RETURNING * INTO v_webhook;
  RETURN json_build_object('id', v_webhook.id, 'url', v_webhook.url, 'events', v_webhook.events,
                           'event_id', v_webhook.event_id, 'secret', v_webhook.secret,
                           'active', v_webhook.active, 'created_at', v_webhook.created_at);
END;
$$;
COMMENT ON FUNCTION api.create_webhook(uuid, text, text[], uuid) IS
  'An admin subscribes p_url (http or https, at most 2048 characters) to p_events (order.paid, '
  'order.refunded, ticket.checked_in), of every event or only p_event_id. Returns {id, url, events, '
  'event_id, secret (whsec_ + 48 hex: the HMAC-SHA256 key of X-Booking-Signature, shown only '
  'here), active, created_at}. Whether the address is allowed is the gateway''s and the worker''s '
  'check (gateway/netguard.py). Raises BKVAL (url, events), BKNTF (unknown event or user).';


CREATE OR REPLACE FUNCTION api.list_webhooks(p_user_id uuid)
RETURNS json
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT coalesce(json_agg(json_build_object(
           'id', w.id, 'url', w.url, 'events', w.events, 'event_id', w.event_id, 'active', w.active,
           'disabled_at', w.disabled_at, 'disabled_reason', w.disabled_reason, 'created_at', w.created_at)
           ORDER BY w.created_at DESC, w.id DESC), '[]'::json)
    FROM webhooks w
   WHERE w.created_by = p_user_id
$$;
COMMENT ON FUNCTION api.list_webhooks(uuid) IS
  'The caller''s webhooks, newest first, deleted and disabled ones included (active false, '
  'disabled_at, disabled_reason); never the secrets. Locks nothing.';


CREATE OR REPLACE FUNCTION api.delete_webhook(p_user_id uuid, p_webhook_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
BEGIN
  UPDATE webhooks
     SET active = false, disabled_at = coalesce(disabled_at, now()),
         disabled_reason = coalesce(disabled_reason, 'deleted by its owner')
   WHERE id = p_webhook_id AND created_by = p_user_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook not found';
  END IF;
  UPDATE webhook_deliveries SET status = 'CANCELLED' WHERE webhook_id = p_webhook_id AND status = 'PENDING';
END;
$$;
COMMENT ON FUNCTION api.delete_webhook(uuid, uuid) IS
  'Deactivates one of the caller''s webhooks (its history stays listable) and cancels its PENDING '
  'deliveries (their jobs find them CANCELLED and send nothing). Deleting again is a no-op. Locks '
  'the webhook''s row, then its deliveries''. Raises BKNTF (unknown or not the caller''s).';


CREATE OR REPLACE FUNCTION api.webhook_attempts(p_user_id uuid, p_webhook_id uuid, p_limit integer DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
  IF p_limit < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'limit must be at least 1';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM webhooks WHERE id = p_webhook_id AND created_by = p_user_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'webhook not found';
  END IF;
  RETURN coalesce((
    SELECT json_agg(json_build_object(
             'delivery_id', page.delivery_id, 'notification_id', page.notification_id,
             'event_type', page.event_type, 'attempt', page.attempt, 'attempted_at', page.attempted_at,
             'status_code', page.status_code, 'error', page.error, 'duration_ms', page.duration_ms,
             'outcome', page.outcome, 'delivery_status', page.delivery_status)
             ORDER BY page.attempted_at DESC, page.id DESC)
      FROM (SELECT a.id, a.delivery_id, d.notification_id, d.event_type, a.attempt, a.attempted_at,
                   a.status_code, a.error, a.duration_ms, a.outcome, d.status AS delivery_status
              FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id
             WHERE d.webhook_id = p_webhook_id
             ORDER BY a.attempted_at DESC, a.id DESC
             LIMIT p_limit) page), '[]'::json);
END;
$$;
COMMENT ON FUNCTION api.webhook_attempts(uuid, uuid, integer) IS
  'The HTTP attempts of one of the caller''s webhooks, newest first, at most p_limit (NULL: all): '
  '{delivery_id, notification_id, event_type, attempt, attempted_at, status_code, error, '
  'duration_ms, outcome, delivery_status}. Locks nothing. Raises BKVAL (limit below 1), BKNTF '
  '(unknown or not the caller''s).';


-- DBAs, from psql (not granted to any login but the owner).

CREATE OR REPLACE FUNCTION api.job_queue()
RETURNS TABLE (queue_name text, task_name text, status text, jobs bigint, oldest_due_wait interval)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT j.queue_name::text, j.task_name::text, j.status::text, count(*),
         CASE WHEN j.status = 'todo' THEN now() - min(
           CASE WHEN j.scheduled_at IS NULL OR j.scheduled_at <= now()
                THEN coalesce(j.scheduled_at, (SELECT min(e.at) FROM procrastinate_events e
                                                WHERE e.job_id = j.id AND e.type = 'deferred')) END) END
    FROM procrastinate_jobs j
   GROUP BY j.queue_name, j.task_name, j.status
   ORDER BY j.queue_name, j.task_name, j.status
$$;
COMMENT ON FUNCTION api.job_queue() IS
  '(DBA-only) The job queue at a glance: jobs per queue, task and status (todo, doing, succeeded, '
  'failed, cancelled, aborted) and, for todo, how long the oldest job that is due (not scheduled '
  'for later) has waited. Queues: mail (send_confirmation), webhooks (deliver_webhook), '
  'housekeeping. Locks nothing; reads every job (procrastinate_jobs is purged by housekeeping).';


CREATE OR REPLACE FUNCTION api.failed_jobs(p_limit integer DEFAULT 100)
RETURNS TABLE (id bigint, queue_name text, task_name text, args jsonb, attempts integer, failed_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
  IF p_limit IS NULL OR p_limit < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'limit must be at least 1';
  END IF;
  RETURN QUERY
    SELECT j.id, j.queue_name::text, j.task_name::text, j.args, j.attempts,
           (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id)
      FROM procrastinate_jobs j
     WHERE j.status = 'failed'
     ORDER BY j.id DESC
     LIMIT p_limit;
END;
$$;
COMMENT ON FUNCTION api.failed_jobs(integer) IS
  '(DBA-only) Jobs that failed for good (retries exhausted, or an error not retried), newest '
  'first, at most p_limit: id, queue, task, args, attempts, when it failed (its last event). '
  'Retry one with api.retry_job(id), all with api.retry_failed_jobs(). Locks nothing.';


CREATE OR REPLACE FUNCTION api.retry_job(p_job_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  v_queue text;
BEGIN
  SELECT j.queue_name INTO v_queue FROM procrastinate_jobs j WHERE j.id = p_job_id AND j.status = 'failed' FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = format('no failed job %s', p_job_id);
  END IF;
  PERFORM procrastinate_retry_job_v2(p_job_id, now(), NULL, NULL, NULL);
  -- A webhook delivery that failed for good is PENDING again (its webhook still active), or
  -- the retried job would find nothing to send.
  UPDATE webhook_deliveries d SET status = 'PENDING'
    FROM procrastinate_jobs j, webhooks w
   WHERE j.id = p_job_id AND j.task_name = 'deliver_webhook'
     AND d.id = (j.args ->> 'delivery_id')::uuid AND d.status = 'FAILED'
     AND w.id = d.webhook_id AND w.active;
  -- Only inserts notify; a listening worker takes the job now rather than at its next poll.
  PERFORM pg_notify('procrastinate_queue_v1#' || v_queue, json_build_object('type', 'job_inserted', 'job_id', p_job_id)::text);
  PERFORM pg_notify('procrastinate_any_queue_v1', json_build_object('type', 'job_inserted', 'job_id', p_job_id)::text);
END;
$$;
COMMENT ON FUNCTION api.retry_job(bigint) IS
  '(DBA-only) Puts a failed job back in the queue, due now (procrastinate''s retry: attempts + 1, '
  'so a job whose retries were exhausted gets one more try), and wakes the workers; a '
  'deliver_webhook job''s FAILED delivery is PENDING again when its webhook is active. Locks the '
  'job row (then the delivery''s). Raises BKNTF (no failed job with this id).';


CREATE OR REPLACE FUNCTION api.retry_failed_jobs(p_task text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  v_job bigint;
  v_count integer := 0;
BEGIN
  FOR v_job IN
    SELECT j.id FROM procrastinate_jobs j
     WHERE j.status = 'failed' AND (p_task IS NULL OR j.task_name = p_task)
     ORDER BY j.id
       FOR UPDATE SKIP LOCKED
  LOOP
    PERFORM api.retry_job(v_job);
    v_count := v_count + 1;
  END LOOP;
  RETURN v_count;
END;
$$;
COMMENT ON FUNCTION api.retry_failed_jobs(text) IS
  '(DBA-only) api.retry_job for every failed job (of task p_task, e.g. send_confirmation or '
  'deliver_webhook, when given); returns how many. Locks those job rows.';


CREATE OR REPLACE FUNCTION api.resend_confirmation(p_order_id uuid)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  v_job bigint;
BEGIN
  PERFORM 1 FROM order_emails WHERE order_id = p_order_id AND kind = 'confirmation' FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'no confirmation e-mail for this order';
  END IF;
  v_job := internal.defer_job('send_confirmation', 'mail', 100, jsonb_build_object('order_id', p_order_id),
                              'mail:' || p_order_id);
  UPDATE order_emails SET sent_at = NULL, message_id = NULL, last_error = NULL, job_id = v_job
   WHERE order_id = p_order_id AND kind = 'confirmation';
  RETURN v_job;
END;
$$;
COMMENT ON FUNCTION api.resend_confirmation(uuid) IS
  '(DBA-only) Sends an order''s confirmation e-mail again (to the recipient recorded then): clears '
  'sent_at and defers a new send_confirmation job; returns its id. Locks the order_emails row. '
  'Raises BKNTF (no such order or e-mail).';
