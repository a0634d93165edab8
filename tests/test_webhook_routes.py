"""The admin webhook routes over HTTP against a real PostgreSQL: create (the secret once), list (no
secret), delete, the deliveries list; an admin sees only their own; bad bodies are 422
validation_failed and URLs that point inside the house 422 url_not_allowed unless
WEBHOOK_ALLOW_PRIVATE=yes. Attempts are recorded the way the worker records them: through
api.record_webhook_attempt on the worker's own role."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.config import ConfigError, Settings
from gateway.routes import ROUTES
from tests.conftest import call
from tests.factories import make_ticket_type, reserve
from tests.http import client_for, new_user

MISSING = "00000000-0000-0000-0000-000000000000"
WORKER_ROLE = "booking_worker"
HOOK = {
    "url": "https://hooks.invalid/booking",
    "events": ["order.paid", "ticket.checked_in"],
}  # .invalid never resolves
SECRET = re.compile(r"^whsec_[0-9a-f]{48}$")
WEBHOOK_ROUTES = [
    ("POST", "/admin/webhooks"),
    ("GET", "/admin/webhooks"),
    ("DELETE", "/admin/webhooks/{webhook_id}"),
    ("GET", "/admin/webhooks/{webhook_id}/deliveries"),
]


def problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"], body


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


@pytest.fixture
def admin(client: TestClient, owner: psycopg.Connection) -> tuple[dict[str, Any], dict[str, str]]:
    return new_user(client, owner, "admin")


def webhook_count(owner: psycopg.Connection) -> int:
    return owner.execute("SELECT count(*) FROM webhooks").fetchone()[0]  # type: ignore[index]


def create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = client.post("/admin/webhooks", headers=headers, json={**HOOK, **body})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


# ------------------------------------------------------------------ create, list, delete


def test_create_answers_the_secret_once_and_list_never(
    client: TestClient, owner: psycopg.Connection, admin: tuple[dict[str, Any], dict[str, str]]
) -> None:
    user, headers = admin
    tt = make_ticket_type(owner)
    created = create(client, headers, event_id=tt["event_id"])
    assert created["url"] == HOOK["url"] and created["events"] == HOOK["events"]
    assert created["event_id"] == tt["event_id"] and created["active"] is True and created["created_at"]
    assert SECRET.fullmatch(created["secret"]), created["secret"]
    row = owner.execute(
        "SELECT created_by::text, secret, url, events FROM webhooks WHERE id = %s", (created["id"],)
    ).fetchone()
    assert row == (user["id"], created["secret"], HOOK["url"], HOOK["events"])

    everything = create(client, headers, events=["order.refunded"])
    assert everything["event_id"] is None and everything["secret"] != created["secret"]

    r = client.get("/admin/webhooks", headers=headers)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [w["id"] for w in listed] == [everything["id"], created["id"]]  # newest first
    assert all("secret" not in w for w in listed) and created["secret"] not in r.text
    assert {k: listed[1].get(k) for k in created if k != "secret"} == {
        k: v for k, v in created.items() if k != "secret"
    }


def test_create_for_an_unknown_event_is_404(client: TestClient, owner: psycopg.Connection, admin: Any) -> None:
    problem(client.post("/admin/webhooks", headers=admin[1], json={**HOOK, "event_id": MISSING}), 404, "not_found")
    assert webhook_count(owner) == 0


def test_delete_stops_the_webhook_and_keeps_it_listed_as_inactive(
    client: TestClient, owner: psycopg.Connection, admin: Any
) -> None:
    headers = admin[1]
    hook = create(client, headers)
    r = client.delete(f"/admin/webhooks/{hook['id']}", headers=headers)
    assert r.status_code == 204 and r.content == b""
    assert owner.execute("SELECT active FROM webhooks WHERE id = %s", (hook["id"],)).fetchone() == (False,)
    listed = client.get("/admin/webhooks", headers=headers).json()
    assert [(w["id"], w["active"]) for w in listed] == [(hook["id"], False)]
    problem(client.delete(f"/admin/webhooks/{MISSING}", headers=headers), 404, "not_found")
    problem(client.delete("/admin/webhooks/not-a-uuid", headers=headers), 422, "validation_failed")


def test_an_admin_sees_only_their_own_webhooks(client: TestClient, owner: psycopg.Connection, admin: Any) -> None:
    hook = create(client, admin[1])
    _, other = new_user(client, owner, "admin")
    assert client.get("/admin/webhooks", headers=other).json() == []
    problem(client.get(f"/admin/webhooks/{hook['id']}/deliveries", headers=other), 404, "not_found")
    problem(client.delete(f"/admin/webhooks/{hook['id']}", headers=other), 404, "not_found")
    assert owner.execute("SELECT active FROM webhooks WHERE id = %s", (hook["id"],)).fetchone() == (True,)
    assert [w["id"] for w in client.get("/admin/webhooks", headers=admin[1]).json()] == [hook["id"]]


def test_only_admins_may_use_the_webhook_routes(client: TestClient, owner: psycopg.Connection, admin: Any) -> None:
    hook = create(client, admin[1])
    _, user = new_user(client, owner)
    for method, path in WEBHOOK_ROUTES:
        path = path.replace("{webhook_id}", hook["id"])
        body = HOOK if method == "POST" else None
        problem(client.request(method, path, headers=user, json=body), 403, "forbidden")
        problem(client.request(method, path, json=body), 401, "unauthorized")
    assert webhook_count(owner) == 1


def test_the_routes_are_in_the_admin_rate_class() -> None:
    classes = {(e.method, e.path): e.rate_class for e in ROUTES}
    assert [classes[route] for route in WEBHOOK_ROUTES] == ["admin"] * 4


# ------------------------------------------------------------------ bad input

TOO_LONG = "https://hooks.invalid/" + "a" * (2049 - len("https://hooks.invalid/"))


@pytest.mark.parametrize(
    "body",
    [
        {**HOOK, "url": "ftp://hooks.invalid/x"},
        {**HOOK, "url": "hooks.invalid/x"},
        {**HOOK, "url": "https://"},
        {**HOOK, "url": "https:///path"},
        {**HOOK, "url": "https://user:pw@hooks.invalid/"},
        {**HOOK, "url": "https://hooks.invalid:0/"},
        {**HOOK, "url": "https://hooks.invalid:70000/"},
        {**HOOK, "url": "https://a..b/"},
        {**HOOK, "url": "https://" + "a" * 64 + ".example/"},
        {**HOOK, "url": "https://hooks.invalid/a b"},
        {**HOOK, "url": "https://hooks.invalid/\x00"},
        {**HOOK, "url": "https://hooks\t.invalid/"},
        {**HOOK, "url": "https://hööks.example/"},
        {**HOOK, "url": TOO_LONG},
        {**HOOK, "url": 5},
        {**HOOK, "url": None},
        {**HOOK, "events": []},
        {**HOOK, "events": ["order.paid", "order.paid"]},
        {**HOOK, "events": ["order.shipped"]},
        {**HOOK, "events": ["ORDER.PAID"]},
        {**HOOK, "events": "order.paid"},
        {**HOOK, "events": [1]},
        {**HOOK, "events": None},
        {**HOOK, "event_id": "not-a-uuid"},
        {**HOOK, "event_id": 7},
        {**HOOK, "secret": "mine"},
        {"url": HOOK["url"]},
        {"events": HOOK["events"]},
        [HOOK],
        "https://hooks.invalid/",
    ],
)
def test_bad_bodies_are_validation_failed(client: TestClient, owner: psycopg.Connection, admin: Any, body: Any) -> None:
    problem(client.post("/admin/webhooks", headers=admin[1], json=body), 422, "validation_failed")
    assert webhook_count(owner) == 0


def test_the_longest_url_is_accepted(client: TestClient, admin: Any) -> None:
    url = TOO_LONG[:-1]
    assert len(url) == 2048
    assert create(client, admin[1], url=url)["url"] == url


def test_deliveries_limit_must_be_a_page_size(client: TestClient, admin: Any) -> None:
    hook = create(client, admin[1])
    for limit in ("0", "201", "-1", "x", "1.5", ""):
        r = client.get(f"/admin/webhooks/{hook['id']}/deliveries?limit={limit}", headers=admin[1])
        problem(r, 422, "validation_failed")
    problem(client.get("/admin/webhooks/nope/deliveries", headers=admin[1]), 422, "validation_failed")
    problem(client.get(f"/admin/webhooks/{MISSING}/deliveries", headers=admin[1]), 404, "not_found")


# ------------------------------------------------------------------ where a webhook may point

PRIVATE = [
    "http://127.0.0.1:9/hook",
    "http://127.1/",  # the short form getaddrinfo reads as 127.0.0.1
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://10.1.2.3/",
    "https://192.168.0.10:8443/x",
    "http://0.0.0.0/",
    "http://localhost:8080/hook",  # a name that resolves to loopback
]


@pytest.mark.parametrize("url", PRIVATE)
def test_private_addresses_are_refused_without_the_opt_in(
    client: TestClient, owner: psycopg.Connection, admin: Any, url: str
) -> None:
    r = client.post("/admin/webhooks", headers=admin[1], json={**HOOK, "url": url})
    problem(r, 422, "url_not_allowed")
    assert "WEBHOOK_ALLOW_PRIVATE" in r.json()["hint"]
    assert webhook_count(owner) == 0


def test_private_addresses_are_accepted_with_the_opt_in(dbname: str, owner: psycopg.Connection) -> None:
    with client_for(dbname, webhook_allow_private=True) as client:
        _, headers = new_user(client, owner, "admin")
        for url in PRIVATE:
            assert create(client, headers, url=url)["url"] == url
    assert webhook_count(owner) == len(PRIVATE)


def test_public_addresses_and_names_that_do_not_resolve_are_accepted(client: TestClient, admin: Any) -> None:
    # A name that does not resolve now may later: the worker checks again before every delivery.
    for url in ("https://93.184.215.14/hook", "http://[2606:4700::1111]:8080/", "https://hooks.invalid/"):
        assert create(client, admin[1], url=url)["url"] == url


def test_webhook_allow_private_is_read_by_its_name_and_junk_refused() -> None:
    base = {"DATABASE_URL": "postgresql://booking_gateway@localhost/booking", "JWT_SECRET": "k"}
    assert Settings.from_env(base).webhook_allow_private is False
    for value, expected in (("yes", True), ("on", True), ("1", True), ("no", False), ("OFF", False)):
        assert Settings.from_env({**base, "WEBHOOK_ALLOW_PRIVATE": value}).webhook_allow_private is expected
    with pytest.raises(ConfigError, match=r"WEBHOOK_ALLOW_PRIVATE.*'maybe'"):
        Settings.from_env({**base, "WEBHOOK_ALLOW_PRIVATE": "maybe"})


# ------------------------------------------------------------------ deliveries


def paid_order(client: TestClient, owner: psycopg.Connection, tt: dict[str, Any]) -> dict[str, Any]:
    buyer, headers = new_user(client, owner)
    hold = reserve(owner, buyer, tt)
    r = client.post(f"/bookings/complete/{hold['id']}", headers=headers, json={"payment_method": "CARD"})
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


def test_deliveries_list_the_attempts_the_worker_recorded(
    client: TestClient,
    owner: psycopg.Connection,
    admin: Any,
    connect: Callable[..., psycopg.Connection],
) -> None:
    headers = admin[1]
    tt = make_ticket_type(owner)
    hook = create(client, headers, event_id=tt["event_id"])
    elsewhere = create(client, headers, event_id=make_ticket_type(owner)["event_id"])  # another event's
    order = paid_order(client, owner, tt)
    deliveries = owner.execute(
        "SELECT id::text, notification_id::text, webhook_id::text, event_type, status FROM webhook_deliveries"
    ).fetchall()
    assert len(deliveries) == 1, deliveries
    delivery_id, notification_id, webhook_id, event_type, status = deliveries[0]
    assert (webhook_id, event_type, status) == (hook["id"], "order.paid", "PENDING")
    assert order["id"] in owner.execute("SELECT body FROM webhook_deliveries").fetchone()[0]  # type: ignore[index]

    url = f"/admin/webhooks/{hook['id']}/deliveries"
    r = client.get(url, headers=headers)
    assert r.status_code == 200 and r.json() == [], r.text  # not tried yet

    worker = connect(WORKER_ROLE)
    call(worker, "record_webhook_attempt", p_delivery_id=delivery_id, p_outcome="RETRY", p_status_code=500,
         p_error="HTTP 500", p_duration_ms=12)  # fmt: skip
    call(worker, "record_webhook_attempt", p_delivery_id=delivery_id, p_outcome="RETRY", p_status_code=None,
         p_error="connection refused", p_duration_ms=3)  # fmt: skip
    call(worker, "record_webhook_attempt", p_delivery_id=delivery_id, p_outcome="DELIVERED", p_status_code=200,
         p_error=None, p_duration_ms=8)  # fmt: skip

    attempts = client.get(url, headers=headers).json()
    assert [(a["attempt"], a["outcome"], a["status_code"], a["error"], a["duration_ms"]) for a in attempts] == [
        (3, "DELIVERED", 200, None, 8),
        (2, "RETRY", None, "connection refused", 3),
        (1, "RETRY", 500, "HTTP 500", 12),
    ]
    for a in attempts:
        assert (a["delivery_id"], a["notification_id"]) == (delivery_id, notification_id)
        assert (a["event_type"], a["delivery_status"]) == ("order.paid", "DELIVERED") and a["attempted_at"]
    assert client.get(url + "?limit=1", headers=headers).json() == attempts[:1]
    assert client.get(url + "?limit=200", headers=headers).json() == attempts
    assert client.get(f"/admin/webhooks/{elsewhere['id']}/deliveries", headers=headers).json() == []

    _, other = new_user(client, owner, "admin")
    problem(client.get(url, headers=other), 404, "not_found")


def test_a_check_in_and_a_410_show_in_the_deliveries(
    client: TestClient,
    owner: psycopg.Connection,
    admin: Any,
    connect: Callable[..., psycopg.Connection],
) -> None:
    headers = admin[1]
    tt = make_ticket_type(owner)
    hook = create(client, headers, events=["ticket.checked_in"])
    order = paid_order(client, owner, tt)  # not subscribed: no delivery
    assert owner.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (0,)
    code = order["tickets"][0]["ticket_code"]
    assert client.post(f"/tickets/{code}/check-in", headers=headers).status_code == 200
    (delivery_id,) = owner.execute("SELECT id FROM webhook_deliveries WHERE webhook_id = %s", (hook["id"],)).fetchone()  # type: ignore[misc]

    call(connect(WORKER_ROLE), "record_webhook_attempt", p_delivery_id=delivery_id, p_outcome="GONE",
         p_status_code=410, p_error="HTTP 410", p_duration_ms=5)  # fmt: skip
    attempts = client.get(f"/admin/webhooks/{hook['id']}/deliveries", headers=headers).json()
    assert [
        (a["attempt"], a["event_type"], a["outcome"], a["status_code"], a["delivery_status"]) for a in attempts
    ] == [(1, "ticket.checked_in", "GONE", 410, "FAILED")]
    listed = client.get("/admin/webhooks", headers=headers).json()
    assert [(w["id"], w["active"]) for w in listed] == [(hook["id"], False)]  # a 410 disables it


# ------------------------------------------------------------------ the document


def test_openapi_documents_the_webhook_routes(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    create_op = doc["paths"]["/admin/webhooks"]["post"]
    assert "url_not_allowed" in create_op["responses"]["422"]["description"]
    assert "validation_failed" in create_op["responses"]["422"]["description"]
    schemas = doc["components"]["schemas"]
    assert "secret" in schemas["WebhookCreated"]["required"] and "secret" not in schemas["Webhook"]["properties"]
    assert schemas["WebhookIn"]["additionalProperties"] is False
    assert schemas["WebhookIn"]["properties"]["events"]["uniqueItems"] is True
    deliveries = doc["paths"]["/admin/webhooks/{webhook_id}/deliveries"]["get"]
    assert [p["name"] for p in deliveries["parameters"]] == ["webhook_id", "limit"]
    assert "Link" not in deliveries["responses"]["200"].get("headers", {})  # no cursor here
    assert "Link" in doc["paths"]["/bookings/my-bookings"]["get"]["responses"]["200"]["headers"]
    assert "url_not_allowed" in schemas["Problem"]["properties"]["code"]["enum"]
