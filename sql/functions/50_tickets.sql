-- Tickets at the door.

CREATE OR REPLACE FUNCTION api.check_in(p_ticket_code text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
  v_ticket tickets;
BEGIN
  -- Two scanners at once: the second UPDATE waits, re-reads CHECKED_IN and matches nothing.
  UPDATE tickets SET status = 'CHECKED_IN', checkin_time = now()
   WHERE ticket_code = p_ticket_code AND status = 'UNUSED'
  RETURNING * INTO v_ticket;
  IF NOT FOUND THEN
    SELECT * INTO v_ticket FROM tickets WHERE ticket_code = p_ticket_code;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'ticket not found';
    ELSIF v_ticket.status = 'CHECKED_IN' THEN
      RAISE EXCEPTION USING ERRCODE = 'BKACI', MESSAGE = 'ticket already checked in',
        DETAIL = format('checked in at %s', to_json(v_ticket.checkin_time) #>> '{}');
    ELSE
      RAISE EXCEPTION USING ERRCODE = 'BKTCN', MESSAGE = 'ticket is cancelled';
    END IF;
  END IF;
  PERFORM internal.notify_webhooks('ticket.checked_in', tt.event_id, jsonb_build_object(
            'ticket_code', v_ticket.ticket_code, 'ticket_type_id', v_ticket.ticket_type_id,
            'order_id', v_ticket.order_id, 'event_id', tt.event_id, 'status', v_ticket.status,
            'checkin_time', v_ticket.checkin_time))
     FROM ticket_types tt WHERE tt.id = v_ticket.ticket_type_id;
  RETURN json_build_object('ticket_code', v_ticket.ticket_code, 'ticket_type_id', v_ticket.ticket_type_id,
                           'status', v_ticket.status, 'checkin_time', v_ticket.checkin_time);
END;
$$;
COMMENT ON FUNCTION api.check_in(text) IS
  'Marks an UNUSED ticket CHECKED_IN with the time and notifies ticket.checked_in webhooks '
  '(internal.notify_webhooks, same transaction). Locks the ticket row. Raises BKNTF, '
  'BKACI (checked in before; DETAIL has when), BKTCN (cancelled ticket).';
