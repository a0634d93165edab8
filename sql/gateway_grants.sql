-- What the gateway's role (booking_gateway) may run: exactly the api functions its routes and
-- its reserve strategies call. Everything else in schema api is for DBAs (their COMMENT says
-- "(DBA-only)"): api.set_user_role, api.expire_reservations, api.cleanup_reservations,
-- api.check_invariants. The functions loader revokes every grant, then runs this file; a test
-- compares it with the gateway's route table.
GRANT EXECUTE ON FUNCTION
  api.register_user, api.get_user_credentials, api.get_user,
  api.list_published_events, api.get_event,
  api.admin_get_event, api.create_event, api.update_event, api.publish_event, api.cancel_event,
  api.create_ticket_type, api.update_ticket_type,
  api.reserve_tickets, api.reserve_tickets_optimistic, api.reserve_tickets_batch,
  api.cancel_reservation, api.complete_booking, api.my_bookings,
  api.check_in
TO booking_gateway;

-- Sessions (login, refresh, logout; the revocation listener's load). DBA-only: api.user_sessions,
-- api.revoke_session, api.revoke_user_sessions, api.purge_sessions.
GRANT EXECUTE ON FUNCTION
  api.create_session, api.refresh_session, api.end_session, api.revocation_state
TO booking_gateway;
-- Rate limits (gateway/ratelimit.py): the coalesced check and the failed-login record.
GRANT EXECUTE ON FUNCTION api.check_rate_limits, api.record_login_success TO booking_gateway;
-- The waiting room: join (the route's api.join_waiting_room, and the batch the gateway's
-- coalescer calls instead) and poll, and the rooms' rules its listener mirrors. DBA-only:
-- api.waiting_room, api.set_waiting_room_rate, api.pause_waiting_room, api.resume_waiting_room,
-- api.waiting_room_audit, api.rotate_admission_secret, api.open_waiting_rooms.
GRANT EXECUTE ON FUNCTION
  api.join_waiting_room, api.join_waiting_room_batch, api.waiting_room_status, api.waiting_room_state,
  api.waiting_room_positions
TO booking_gateway;
-- Organizers' webhooks (/admin/webhooks). The job queue's functions are DBA-only (api.job_queue,
-- api.failed_jobs, api.retry_job, api.retry_failed_jobs, api.resend_confirmation) or the
-- worker's (sql/worker_grants.sql).
GRANT EXECUTE ON FUNCTION api.create_webhook, api.list_webhooks, api.delete_webhook, api.webhook_attempts
TO booking_gateway;
-- Provider payments (issue 12): checkout, the buyer's order (read, cancel), the admin refund, and
-- the verified callbacks. DBA-only: api.set_payment_mode, api.payment_mode,
-- api.expire_pending_orders, api.pending_payments, api.payment_inbox, api.stuck_refunds,
-- api.unresolved_payments, api.resolve_payment_event. The worker's: api.refund_request,
-- api.record_refund, api.payments_to_reconcile, api.reconcile_payment, api.refund_cancelled_event.
GRANT EXECUTE ON FUNCTION
  api.checkout, api.get_order, api.cancel_order, api.refund_order, api.apply_payment_event
TO booking_gateway;
-- The provider's pay_url, stored after checkout created the payment there (gateway/app.py).
GRANT EXECUTE ON FUNCTION api.set_pay_url TO booking_gateway;
