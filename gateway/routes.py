"""The route table: every HTTP route is one call of one api.* function.

An Endpoint says which function, which status on success, who may call it, what body it
takes, which business errors it documents and what it returns. The generic handler in app.py
does the rest: path parameters become `p_<name>`, body fields `p_<field>` (a PATCH body
becomes `p_changes`), the caller's id `p_user_id`. The few routes that need a step of their
own (hashing a password, checking one, the cached list, pages, the reserve strategy) name a
`special` handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.models import (
    Body,
    CompleteIn,
    EventIn,
    EventPatch,
    LoginIn,
    RefreshIn,
    RegisterIn,
    ReserveIn,
    TicketTypeIn,
    TicketTypePatch,
    WebhookIn,
)

PUBLIC, USER, ADMIN = "public", "user", "admin"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    function: str  # the api function it calls (reserve: the canonical one; see gateway/onsale/reserve.py)
    summary: str
    status: int = 200
    auth: str = PUBLIC
    body: type[Body] | None = None
    patch: bool = False  # the body is a patch: it goes as p_changes (only the fields sent)
    passes_user: bool = False  # p_user_id from the token
    special: str | None = None  # a handler of its own in app.py
    errors: tuple[str, ...] = ()  # business errors; auth, validation, size, busy are added from the above
    returns: str | None = None  # the success body's schema (gateway/openapi.py); "[X]" is a page of X
    query: tuple[str, ...] = ()  # query parameters it takes (QUERY_PARAMETERS)
    # Rate-limit class (auth | browse | bookings | admin; rules in the table rate_limit_rules);
    # left empty, it follows from the route: /auth/* auth, admin-only admin, GET browse, else bookings.
    rate_class: str = ""
    idempotent: bool = False  # takes an Idempotency-Key header (passed as p_idempotency_key)
    # A public catalogue read that a standby may answer (GATEWAY_DATABASE_READ_URL: gateway/db.py
    # ReadRouter). Never a write, nor a user's own data (read your writes), nor the waiting room.
    standby_ok: bool = False

    def __post_init__(self) -> None:
        if not self.rate_class:
            object.__setattr__(self, "rate_class", default_rate_class(self.method, self.path, self.auth))
        if self.rate_class not in RATE_CLASSES:
            raise ValueError(f"{self.path}: rate_class must be one of {', '.join(RATE_CLASSES)}")
        if self.standby_ok and (self.method, self.auth, self.passes_user, self.body) != ("GET", PUBLIC, False, None):
            raise ValueError(f"{self.path}: only public GETs of no one's own data may be answered by a standby")


RATE_CLASSES = ("auth", "browse", "bookings", "admin")


def default_rate_class(method: str, path: str, auth: str) -> str:
    if path.startswith("/auth/"):
        return "auth"
    if auth == ADMIN:
        return "admin"
    return "browse" if method == "GET" else "bookings"


ROUTES: list[Endpoint] = [
    Endpoint("POST", "/auth/register", "register_user", "Create an account", 201, body=RegisterIn,
             special="register", errors=("email_taken",), returns="User"),
    Endpoint("POST", "/auth/login", "get_user_credentials", "Log in: a bearer token", body=LoginIn,
             special="login", errors=("invalid_credentials",), returns="Token"),
    Endpoint("POST", "/auth/refresh", "refresh_session",
             "A new token pair for a refresh token (which is spent; presenting it again revokes the session)",
             body=RefreshIn, special="refresh", errors=("unauthorized",), returns="Token"),
    Endpoint("POST", "/auth/logout", "end_session", "Log out: this session's tokens stop working everywhere",
             204, USER, special="logout"),
    Endpoint("GET", "/me", "get_user", "The current user", auth=USER, passes_user=True,
             errors=("not_found",), returns="User"),
    Endpoint("GET", "/events", "list_published_events",
             "Published events by start time, a page at a time (cached; ETag); ?q= searches names",
             special="events", returns="[EventListed]", query=("q", "limit", "cursor"), standby_ok=True),
    Endpoint("GET", "/events/{id_or_slug}", "get_event", "One event with live availability",
             errors=("not_found",), returns="Event", standby_ok=True),
    Endpoint("POST", "/events/{event_id}/queue", "join_waiting_room",
             "Join the event's waiting room (one place per user; joining again returns the same place)",
             auth=USER, passes_user=True, special="join_queue", errors=("not_found", "sale_not_open"),
             returns="QueuePlace"),
    Endpoint("GET", "/events/{event_id}/queue", "waiting_room_status",
             "My place in the event's waiting room now; the admission token once admitted",
             auth=USER, passes_user=True, special="queue_status", errors=("not_found",), returns="QueuePlace"),
    Endpoint("POST", "/admin/events", "create_event", "Create an event (DRAFT)", 201, ADMIN, EventIn,
             errors=("slug_taken",), returns="Event"),
    Endpoint("GET", "/admin/events/{event_id}", "admin_get_event", "One event in any status", auth=ADMIN,
             errors=("not_found",), returns="Event"),
    Endpoint("PATCH", "/admin/events/{event_id}", "update_event", "Edit an event", auth=ADMIN,
             body=EventPatch, patch=True, errors=("not_found", "slug_taken", "invalid_state"), returns="Event"),
    Endpoint("POST", "/admin/events/{event_id}/publish", "publish_event", "Publish an event", auth=ADMIN,
             errors=("not_found", "invalid_state"), returns="Event"),
    Endpoint("POST", "/admin/events/{event_id}/cancel", "cancel_event", "Cancel an event", auth=ADMIN,
             errors=("not_found", "invalid_state"), returns="Event"),
    Endpoint("POST", "/admin/events/{event_id}/ticket-types", "create_ticket_type", "Add a ticket type", 201,
             ADMIN, TicketTypeIn, errors=("not_found", "invalid_state"), returns="TicketType"),
    Endpoint("PATCH", "/admin/ticket-types/{ticket_type_id}", "update_ticket_type", "Edit a ticket type",
             auth=ADMIN, body=TicketTypePatch, patch=True, errors=("not_found",), returns="TicketType"),
    Endpoint("POST", "/bookings/reserve", "reserve_tickets",
             "Hold seats for the hold period (database setting booking.hold_period, default 10 minutes)",
             201, USER, ReserveIn, passes_user=True, special="reserve",
             errors=("not_found", "sold_out", "sale_not_open", "not_admitted", "limit_exceeded",
                     "idempotency_key_reused"),
             returns="Reservation", idempotent=True),
    Endpoint("DELETE", "/bookings/reservations/{reservation_id}", "cancel_reservation", "Give a hold back", 204,
             USER, passes_user=True, errors=("not_found", "reservation_not_active", "reservation_expired")),
    Endpoint("POST", "/bookings/complete/{reservation_id}", "complete_booking", "Pay: order, payment, tickets",
             201, USER, CompleteIn, passes_user=True,
             errors=("not_found", "reservation_expired", "reservation_not_active", "sale_not_open",
                     "idempotency_key_reused", "payment_required"),
             returns="Order", idempotent=True),
    Endpoint("GET", "/bookings/my-bookings", "my_bookings", "My orders, newest first, a page at a time",
             auth=USER, passes_user=True, special="my_bookings", returns="[Order]", query=("limit", "cursor")),
    Endpoint("POST", "/tickets/{ticket_code}/check-in", "check_in", "Check a ticket in at the door", auth=ADMIN,
             errors=("not_found", "already_checked_in", "ticket_cancelled"), returns="CheckedIn"),
    # Provider payments (issue 12; PAYMENT_MODE=provider). The providers' callbacks are not routes
    # of this table (their bodies, answers and limits are the providers'): gateway/payments/callbacks.py.
    Endpoint("POST", "/bookings/checkout/{reservation_id}", "checkout",
             "Pay through a provider: a PENDING order whose payment has a pay_url and a deadline "
             "(the seats stay held until then)", 201, USER, CompleteIn, passes_user=True, special="checkout",
             errors=("not_found", "reservation_expired", "reservation_not_active", "sale_not_open",
                     "idempotency_key_reused", "provider_unavailable"),
             returns="Order", idempotent=True),
    Endpoint("GET", "/bookings/orders/{order_id}", "get_order", "My order, whatever its status", auth=USER,
             passes_user=True, special="order", errors=("not_found",), returns="Order"),
    Endpoint("DELETE", "/bookings/orders/{order_id}", "cancel_order",
             "Give up a PENDING order: CANCELLED, seats back", 204, USER, passes_user=True,
             errors=("not_found", "invalid_order_state")),
    Endpoint("POST", "/admin/orders/{order_id}/refund", "refund_order",
             "Refund a PAID order: tickets CANCELLED, seats back unless the event started; REFUNDED once "
             "the provider has refunded (REFUND_PENDING until then)", auth=ADMIN,
             errors=("not_found", "invalid_order_state"),
             returns="Order"),
    # Webhooks (issue 11): an admin's own; another admin's are 404.
    Endpoint("POST", "/admin/webhooks", "create_webhook",
             "Subscribe a URL to notifications (signed POSTs); the answer holds the signing secret, shown only here",
             201, ADMIN, WebhookIn, passes_user=True, special="create_webhook",
             errors=("not_found", "url_not_allowed"), returns="WebhookCreated"),
    Endpoint("GET", "/admin/webhooks", "list_webhooks", "My webhooks, newest first (no secrets)", auth=ADMIN,
             passes_user=True, returns="[Webhook]"),
    Endpoint("DELETE", "/admin/webhooks/{webhook_id}", "delete_webhook",
             "Stop a webhook (its history stays; pending deliveries are cancelled)", 204, ADMIN, passes_user=True,
             errors=("not_found",)),
    Endpoint("GET", "/admin/webhooks/{webhook_id}/deliveries", "webhook_attempts",
             "A webhook's delivery attempts, newest first", auth=ADMIN, passes_user=True,
             special="webhook_attempts", errors=("not_found",), returns="[WebhookAttempt]", query=("limit",)),
]  # fmt: skip

# api functions the gateway calls besides its routes' own (login's session, the revocation and
# waiting-room listeners, the coalesced joins of a waiting room: gateway/onsale/join.py).
GATEWAY_CALLS = {
    "create_session",
    "revocation_state",
    "waiting_room_state",
    "join_waiting_room_batch",
    "waiting_room_positions",
    "apply_payment_event",  # the providers' callbacks (gateway/payments/callbacks.py)
    "set_pay_url",  # checkout, after creating the payment at its provider (gateway/app.py)
}

# api functions with no route: DBAs call them from psql (their COMMENT says "(DBA-only)").
DBA_ONLY = {"expire_reservations", "cleanup_reservations", "check_invariants", "set_user_role"}
DBA_ONLY |= {"user_sessions", "revoke_session", "revoke_user_sessions", "purge_sessions"}  # sessions
# Rate limits (sql/functions/70_rate_limits.sql).
DBA_ONLY |= {"rate_limits", "set_rate_limit", "rate_limit_state", "clear_rate_limit", "purge_rate_limits"}
DBA_ONLY |= {"buyer_counts", "purge_idempotency_keys"}
# The waiting room (sql/functions/80_waiting_room.sql).
DBA_ONLY |= {"waiting_room", "set_waiting_room_rate", "pause_waiting_room", "resume_waiting_room", "waiting_room_audit"}
DBA_ONLY |= {"rotate_admission_secret", "open_waiting_rooms"}
# The job queue and the confirmation e-mails (sql/functions/90_delivery.sql).
DBA_ONLY |= {"job_queue", "failed_jobs", "retry_job", "retry_failed_jobs", "resend_confirmation"}
# Provider payments (sql/functions/95_payments.sql).
DBA_ONLY |= {"set_payment_mode", "payment_mode", "expire_pending_orders", "pending_payments", "payment_inbox"}
DBA_ONLY |= {"stuck_refunds"}
DBA_ONLY |= {"unresolved_payments", "resolve_payment_event"}  # refused money waiting for a DBA

# Path parameters and their checks: *_id are UUIDs; the rest are bounded strings.
PATH_TEXT_LIMITS = {"id_or_slug": 255, "ticket_code": 50}

# Pages: GET /events and GET /bookings/my-bookings (limit and cursor), a webhook's deliveries (limit).
PAGE_DEFAULT, PAGE_MAX = 50, 200
QUERY_TEXT_LIMITS = {"q": 200}
