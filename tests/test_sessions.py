"""Sessions (issue 9): refresh rotation, reuse detection with a grace, logout everywhere at once
(two real gateway processes), role changes and deleted users at once, the deny-list reloaded on
every (re)connect, DBA functions, the purge. Real PostgreSQL, real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from starlette.testclient import TestClient

from dbctl.migrate import ROOT
from dbctl.throwaway import free_port
from gateway.auth import Auth
from gateway.config import ConfigError, Settings
from gateway.errors import ApiError
from gateway.revocations import Revocations, listen_for_revocations
from tests.conftest import dba_call, url_for
from tests.factories import make_event, make_ticket_type, make_user
from tests.http import PASSWORD, PASSWORD_HASH, SECRET, client_for, forged, login

Client = TestClient | httpx.Client


def new_user(_: Client, owner: psycopg.Connection, role: str = "user") -> tuple[dict[str, Any], None]:
    """A user with the known password, not yet logged in (no session)."""
    user = make_user(owner, role)
    owner.execute("UPDATE users SET password_hash = %s WHERE id = %s", (PASSWORD_HASH, user["id"]))
    return user, None


def signed_in(client: Client, email: str) -> dict[str, Any]:
    r = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    return body


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def refresh(client: Client, token: str) -> httpx.Response:
    return client.post("/auth/refresh", json={"refresh_token": token})


def problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["code"] == code, r.text


def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def client(dbname: str) -> Iterator[TestClient]:
    with client_for(dbname) as c:
        yield c


def revocations_of(client: TestClient) -> Revocations:
    revocations: Revocations = client.app.state.gateway.auth.revocations  # type: ignore[attr-defined]
    return revocations


# ------------------------------------------------------------------ tokens and refresh


def test_login_gives_a_pair_and_refresh_rotates(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    first = signed_in(client, user["email"])
    claims = jwt.decode(first["access_token"], SECRET, algorithms=["HS256"], issuer="booking-gateway")
    assert first["expires_in"] == 900 and claims["exp"] - claims["iat"] == 900
    session_id = claims["sid"]
    stored = owner.execute("SELECT token_hash, session_id FROM refresh_tokens").fetchall()
    assert [str(s) for _, s in stored] == [session_id]
    assert first["refresh_token"].encode() not in bytes(stored[0][0]), "only the hash is stored"

    second = refresh(client, first["refresh_token"])
    assert second.status_code == 200, second.text
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"] and pair["token_type"] == "bearer"
    assert jwt.decode(pair["access_token"], SECRET, algorithms=["HS256"], issuer="booking-gateway")["sid"] == session_id
    assert client.get("/me", headers=bearer(pair)).json()["id"] == user["id"]
    third = refresh(client, pair["refresh_token"])
    assert third.status_code == 200, third.text
    used = owner.execute("SELECT count(*) FILTER (WHERE used_at IS NOT NULL), count(*) FROM refresh_tokens")
    assert used.fetchone() == (2, 3)


def test_reuse_after_the_grace_revokes_the_whole_session(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    first = signed_in(client, user["email"])
    newest = refresh(client, first["refresh_token"]).json()
    assert client.get("/me", headers=bearer(newest)).status_code == 200  # verified and cached
    # The first token was spent 11 s ago: past the default grace of 10 s.
    owner.execute("UPDATE refresh_tokens SET used_at = now() - interval '11 seconds' WHERE used_at IS NOT NULL")

    problem(refresh(client, first["refresh_token"]), 401, "unauthorized")
    reason = owner.execute("SELECT revoked_reason FROM sessions").fetchone()
    assert reason == ("reuse",), "the revocation was committed, not rolled back with the 401"
    problem(refresh(client, newest["refresh_token"]), 401, "unauthorized")
    problem(client.get("/me", headers=bearer(newest)), 401, "unauthorized")
    problem(client.get("/me", headers=bearer(first)), 401, "unauthorized")
    # Another login is another session: unaffected.
    other = signed_in(client, user["email"])
    assert client.get("/me", headers=bearer(other)).status_code == 200


def test_reuse_within_the_grace_gives_a_second_pair(client: TestClient, owner: psycopg.Connection) -> None:
    """Two tabs refresh with the same token at once: both get a working pair."""
    user, _ = new_user(client, owner)
    first = signed_in(client, user["email"])
    a = refresh(client, first["refresh_token"])
    b = refresh(client, first["refresh_token"])
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["refresh_token"] != b.json()["refresh_token"]
    for pair in (a.json(), b.json()):
        assert client.get("/me", headers=bearer(pair)).status_code == 200
        assert refresh(client, pair["refresh_token"]).status_code == 200


def test_grace_zero_makes_any_reuse_a_revocation(dbname: str, owner: psycopg.Connection) -> None:
    with client_for(dbname, refresh_grace=0) as client:
        user, _ = new_user(client, owner)
        first = signed_in(client, user["email"])
        newest = refresh(client, first["refresh_token"]).json()
        problem(refresh(client, first["refresh_token"]), 401, "unauthorized")
        problem(client.get("/me", headers=bearer(newest)), 401, "unauthorized")


@pytest.mark.parametrize(
    "token", ["", "x" * 43, "not a token", "A" * 256, "\u00e9" * 43, "a\x00" * 20, str(uuid.uuid4())]
)
def test_unknown_or_malformed_refresh_tokens(client: TestClient, token: str) -> None:
    r = refresh(client, token)
    assert r.status_code in (401, 422), r.text
    assert r.json()["code"] == ("unauthorized" if r.status_code == 401 else "validation_failed")
    if r.status_code == 401:
        assert r.headers["WWW-Authenticate"] == "Bearer"  # no bearer token was involved
    problem(client.post("/auth/refresh", json={}), 422, "validation_failed")
    problem(client.post("/auth/refresh", content=b"{"), 422, "validation_failed")
    problem(client.post("/auth/refresh", json={"refresh_token": 5}), 422, "validation_failed")


def test_expired_refresh_token_and_ended_session_are_401(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    a, b = signed_in(client, user["email"]), signed_in(client, user["email"])
    owner.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'"
                  " WHERE session_id = (SELECT id FROM sessions ORDER BY created_at LIMIT 1)")  # fmt: skip
    owner.execute("UPDATE sessions SET expires_at = now() - interval '1 second'"
                  " WHERE id = (SELECT id FROM sessions ORDER BY created_at DESC LIMIT 1)")  # fmt: skip
    problem(refresh(client, a["refresh_token"]), 401, "unauthorized")
    problem(refresh(client, b["refresh_token"]), 401, "unauthorized")


def test_tokens_without_a_session_are_refused(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    now = int(time.time())
    claims = {"sub": user["id"], "role": "user", "iat": now, "exp": now + 600, "iss": "booking-gateway"}
    for extra in ({}, {"sid": None}, {"sid": "not-a-uuid"}, {"sid": 7}):
        token = jwt.encode({**claims, **extra}, SECRET, algorithm="HS256")
        problem(client.get("/me", headers={"Authorization": f"Bearer {token}"}), 401, "unauthorized")


# ------------------------------------------------------------------ logout


def test_logout_ends_the_session_and_nothing_else(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    pair, other = signed_in(client, user["email"]), signed_in(client, user["email"])
    assert client.get("/me", headers=bearer(pair)).status_code == 200  # cached as verified
    r = client.post("/auth/logout", headers=bearer(pair))
    assert r.status_code == 204 and r.content == b""
    problem(client.get("/me", headers=bearer(pair)), 401, "unauthorized")
    problem(client.post("/auth/logout", headers=bearer(pair)), 401, "unauthorized")
    problem(refresh(client, pair["refresh_token"]), 401, "unauthorized")
    assert client.get("/me", headers=bearer(other)).status_code == 200
    assert refresh(client, other["refresh_token"]).status_code == 200
    problem(client.post("/auth/logout"), 401, "unauthorized")


@contextlib.contextmanager
def gateway_process(dbname: str) -> Iterator[httpx.Client]:
    """`uvicorn --factory gateway.app:create_app` as its own process, configured by environment."""
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": url_for(dbname, "booking_gateway"),
        "JWT_SECRET": SECRET,
        "RATE_LIMITS": "off",
        "POOL_MIN_SIZE": "1",
        "POOL_MAX_SIZE": "4",
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
                assert time.monotonic() < deadline, "the gateway did not start"
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        break
                time.sleep(0.1)
            yield http
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_logout_on_one_gateway_is_refused_on_another_at_once(dbname: str, owner: psycopg.Connection) -> None:
    """Two gateway processes, each with its own pool and listener. When A answers the logout
    204, PostgreSQL has sent the notice to every listener: A refuses the token on the very next
    request, B as soon as its event loop has read the notice (milliseconds; the bound below is
    for a loaded test machine: without the push B would accept the token until it expires)."""
    with client_for(dbname) as setup:
        user, _ = new_user(setup, owner)
    with gateway_process(dbname) as a, gateway_process(dbname) as b:
        for _ in range(3):
            pair = signed_in(a, user["email"])
            assert b.get("/me", headers=bearer(pair)).status_code == 200  # B has it as verified
            assert a.post("/auth/logout", headers=bearer(pair)).status_code == 204
            problem(a.get("/me", headers=bearer(pair)), 401, "unauthorized")
            headers = bearer(pair)
            until(lambda: b.get("/me", headers=headers).status_code == 401, 2.0)  # noqa: B023
            problem(b.get("/me", headers=bearer(pair)), 401, "unauthorized")
            problem(refresh(b, pair["refresh_token"]), 401, "unauthorized")


def test_a_gateway_started_after_a_revocation_refuses_the_token(dbname: str, owner: psycopg.Connection) -> None:
    """NOTIFY has no replay: a gateway that was down during a logout loads the deny-list when
    its listener connects."""
    with client_for(dbname) as a:
        user, _ = new_user(a, owner)
        pair = signed_in(a, user["email"])
        assert a.post("/auth/logout", headers=bearer(pair)).status_code == 204
    with gateway_process(dbname) as b:
        # 503 until its listener has loaded the deny-list (never 200); then refused.
        until(lambda: b.get("/me", headers=bearer(pair)).status_code != 503)
        problem(b.get("/me", headers=bearer(pair)), 401, "unauthorized")
        other = signed_in(b, user["email"])
        assert b.get("/me", headers=bearer(other)).status_code == 200


def test_the_listener_reloads_everything_when_it_reconnects(dbname: str, owner: psycopg.Connection) -> None:
    """A revocation made while the listener is away (its notice is lost) is known after it reconnects."""
    url = url_for(dbname, "booking_gateway")
    kept, lost = str(uuid.uuid4()), str(uuid.uuid4())
    user = make_user(owner, "admin")

    async def scenario() -> Revocations:
        revocations = Revocations()
        listener = asyncio.create_task(listen_for_revocations(revocations, url, retry_delay=0.05))
        try:
            async with asyncio.timeout(30):
                assert await revocations.first_load(10)
                assert revocations.roles[user["id"]][0] == "admin"
                await asyncio.to_thread(owner.execute, "SELECT api.end_session(NULL, %s)", (kept,))
                for _ in range(1000):
                    if kept in revocations.sessions:
                        break
                    await asyncio.sleep(0.01)
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
                revocations.forget()  # as if this process had missed it all
                await asyncio.to_thread(owner.execute, "SELECT api.end_session(NULL, %s)", (lost,))
                listener = asyncio.create_task(listen_for_revocations(revocations, url, retry_delay=0.05))
                assert await revocations.first_load(10)
                return revocations
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    revocations = asyncio.run(scenario())
    assert {kept, lost} <= set(revocations.sessions)
    assert revocations.roles[user["id"]][0] == "admin"


def test_a_terminated_listener_reconnects_and_reloads(dbname: str, owner: psycopg.Connection) -> None:
    """The listener's connection is killed by the server; a logout made then is refused once it is back."""
    with client_for(dbname) as client:
        user, _ = new_user(client, owner)
        pair = signed_in(client, user["email"])
        revocations = revocations_of(client)
        sid = jwt.decode(pair["access_token"], SECRET, algorithms=["HS256"], issuer="booking-gateway")["sid"]
        with psycopg.connect(url_for(dbname, "postgres"), autocommit=True) as su:
            killed = su.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND query LIKE '%revocation_state%'"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        until(lambda: not revocations.listening, 5)
        owner.execute(
            "INSERT INTO revoked_sessions (session_id) VALUES (%s)", (sid,)
        )  # no NOTIFY: only a reload finds it
        until(lambda: sid in revocations.sessions)
        problem(client.get("/me", headers=bearer(pair)), 401, "unauthorized")


# ------------------------------------------------------------------ roles and deleted users


def test_a_demoted_admin_gets_403_at_once_and_cannot_refresh(client: TestClient, owner: psycopg.Connection) -> None:
    admin, _ = new_user(client, owner, role="admin")
    pair = signed_in(client, admin["email"])
    event = make_event(owner, publish=False)
    assert client.get(f"/admin/events/{event['id']}", headers=bearer(pair)).status_code == 200
    revocations = revocations_of(client)

    dba_call(owner, "set_user_role", p_email=admin["email"], p_role="user")
    until(lambda: revocations.roles.get(admin["id"], ("", 0.0))[0] == "user")  # pushed, not polled
    problem(client.get(f"/admin/events/{event['id']}", headers=bearer(pair)), 403, "forbidden")
    problem(client.post("/admin/events", headers=bearer(pair), json={}), 403, "forbidden")
    assert client.get("/me", headers=bearer(pair)).status_code == 200, "still a user"
    problem(refresh(client, pair["refresh_token"]), 401, "unauthorized")
    assert owner.execute("SELECT revoked_reason FROM sessions").fetchone() == ("role_changed",)
    assert owner.execute("SELECT count(*) FROM revoked_sessions").fetchone() == (0,)

    # Promoted again: the old token opens admin routes again; a new login is admin too.
    dba_call(owner, "set_user_role", p_email=admin["email"], p_role="admin")
    until(lambda: revocations.roles[admin["id"]][0] == "admin")
    assert client.get(f"/admin/events/{event['id']}", headers=bearer(pair)).status_code == 200
    fresh = signed_in(client, admin["email"])
    assert client.get(f"/admin/events/{event['id']}", headers=bearer(fresh)).status_code == 200
    # Setting the role it has already changes nothing.
    dba_call(owner, "set_user_role", p_email=admin["email"], p_role="admin")
    assert refresh(client, fresh["refresh_token"]).status_code == 200


def test_a_demotion_reaches_a_gateway_that_was_down(dbname: str, owner: psycopg.Connection) -> None:
    with client_for(dbname) as setup:
        admin, _ = new_user(setup, owner, role="admin")
        pair = signed_in(setup, admin["email"])
    dba_call(owner, "set_user_role", p_email=admin["email"], p_role="user")
    with client_for(dbname) as later:
        until(lambda: later.get("/me", headers=bearer(pair)).status_code != 503)
        problem(later.post("/admin/events", headers=bearer(pair), json={}), 403, "forbidden")
        assert later.get("/me", headers=bearer(pair)).status_code == 200


def test_a_deleted_users_tokens_are_401(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    pair = signed_in(client, user["email"])
    assert client.get("/me", headers=bearer(pair)).status_code == 200
    sid = jwt.decode(pair["access_token"], SECRET, algorithms=["HS256"], issuer="booking-gateway")["sid"]
    owner.execute("DELETE FROM users WHERE id = %s", (user["id"],))
    assert owner.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    until(lambda: sid in revocations_of(client).sessions)
    problem(client.get("/me", headers=bearer(pair)), 401, "unauthorized")
    problem(refresh(client, pair["refresh_token"]), 401, "unauthorized")


# ------------------------------------------------------------------ DBAs and the purge


def test_dba_sees_and_revokes_sessions(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    a, b, c = (signed_in(client, user["email"]) for _ in range(3))
    refresh(client, a["refresh_token"])
    rows = owner.execute("SELECT * FROM api.user_sessions(%s)", (user["email"].upper(),)).fetchall()
    assert len(rows) == 3 and sorted(r[6] for r in rows) == [1, 1, 2]
    sid_b = jwt.decode(b["access_token"], SECRET, algorithms=["HS256"], issuer="booking-gateway")["sid"]
    assert dba_call(owner, "revoke_session", p_session_id=sid_b) is True
    assert dba_call(owner, "revoke_session", p_session_id=sid_b) is False
    until(lambda: sid_b in revocations_of(client).sessions)
    problem(client.get("/me", headers=bearer(b)), 401, "unauthorized")
    assert client.get("/me", headers=bearer(c)).status_code == 200

    assert dba_call(owner, "revoke_user_sessions", p_email=user["email"]) == 2
    sid_c = jwt.decode(c["access_token"], SECRET, algorithms=["HS256"], issuer="booking-gateway")["sid"]
    until(lambda: sid_c in revocations_of(client).sessions)
    problem(client.get("/me", headers=bearer(c)), 401, "unauthorized")
    rows = owner.execute("SELECT revoked_reason, access_denied FROM api.user_sessions(%s)", (user["email"],))
    assert rows.fetchall() == [("dba", True)] * 3
    for function, args in (("revoke_session", {"p_session_id": str(uuid.uuid4())}),
                           ("revoke_user_sessions", {"p_email": "ghost@example.com"})):  # fmt: skip
        with pytest.raises(psycopg.Error) as caught:
            dba_call(owner, function, **args)
        assert caught.value.diag.sqlstate == "BKNTF"


def test_the_gateway_role_cannot_run_the_dba_session_functions(gw: psycopg.Connection) -> None:
    for call in ("api.user_sessions('a@b.co')", f"api.revoke_session('{uuid.uuid4()}')",
                 "api.revoke_user_sessions('a@b.co')", "api.purge_sessions()"):  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            gw.execute(f"SELECT {call}")


def test_purge_removes_expired_rows_and_keeps_live_ones(client: TestClient, owner: psycopg.Connection) -> None:
    user, _ = new_user(client, owner)
    live, ended, revoked = (signed_in(client, user["email"]) for _ in range(3))
    sids = [jwt.decode(p["access_token"], SECRET, algorithms=["HS256"], issuer="booking-gateway")["sid"]
            for p in (live, ended, revoked)]  # fmt: skip
    refresh(client, live["refresh_token"])
    owner.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 s' WHERE parent_hash IS NULL"
                  " AND session_id = %s", (sids[0],))  # fmt: skip
    # Ended over 24 h ago (an ended session is kept 24 h: its last access tokens may still be revoked).
    owner.execute("UPDATE sessions SET expires_at = now() - interval '25 hours' WHERE id = %s", (sids[1],))
    owner.execute("UPDATE sessions SET revoked_at = now() - interval '25 hours', revoked_reason = 'dba'"
                  " WHERE id = %s", (sids[2],))  # fmt: skip
    old, recent = uuid.uuid4(), uuid.uuid4()
    owner.execute("INSERT INTO revoked_sessions VALUES (%s, now() - interval '25 hours'), (%s, now())", (old, recent))
    owner.execute("INSERT INTO role_changes VALUES (%s, 'user', now() - interval '25 hours'), (%s, 'admin', now())",
                  (uuid.uuid4(), user["id"]))  # fmt: skip

    counts = dba_call(owner, "purge_sessions")
    assert counts == {"sessions": 2, "refresh_tokens": 1, "revoked_sessions": 1, "role_changes": 1}
    assert [str(r[0]) for r in owner.execute("SELECT id FROM sessions")] == [sids[0]]
    assert owner.execute("SELECT count(*) FROM refresh_tokens").fetchone() == (1,)
    assert {r[0] for r in owner.execute("SELECT session_id FROM revoked_sessions")} == {recent}
    assert owner.execute("SELECT user_id::text FROM role_changes").fetchall() == [(user["id"],)]
    assert dba_call(owner, "purge_sessions") == {"sessions": 0, "refresh_tokens": 0, "revoked_sessions": 0,
                                                 "role_changes": 0}  # fmt: skip


# ------------------------------------------------------------------ settings and the contract


def test_session_settings() -> None:
    base = {"database_url": "postgresql://x@127.0.0.1/db", "jwt_secret": SECRET}
    s = Settings(**base)
    assert (s.token_ttl, s.refresh_ttl, s.session_ttl, s.refresh_grace) == (900, 1209600, 2592000, 10)
    env = {"DATABASE_URL": base["database_url"], "JWT_SECRET": SECRET}
    s = Settings.from_env({**env, "JWT_TTL_SECONDS": "86400", "REFRESH_TTL_SECONDS": "60",
                           "SESSION_TTL_SECONDS": "120", "REFRESH_REUSE_GRACE_SECONDS": "0"})  # fmt: skip
    assert (s.token_ttl, s.refresh_ttl, s.session_ttl, s.refresh_grace) == (86400, 60, 120, 0)
    for name, value in (("JWT_TTL_SECONDS", "86401"), ("REFRESH_TTL_SECONDS", "0"),
                        ("SESSION_TTL_SECONDS", "x"), ("REFRESH_REUSE_GRACE_SECONDS", "-1")):  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**env, name: value})


def test_openapi_documents_refresh_and_logout(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/auth/refresh"]["post"]["responses"]) >= {"200", "401", "422"}
    assert set(paths["/auth/logout"]["post"]["responses"]) >= {"204", "401"}
    assert paths["/auth/logout"]["post"]["security"] == [{"bearer": []}]
    token = client.get("/openapi.json").json()["components"]["schemas"]["Token"]
    assert "refresh_token" in token["required"]


def test_forged_helper_tokens_still_work(client: TestClient, owner: psycopg.Connection) -> None:
    """tests/http.py's forged tokens carry a random sid: signed, so accepted, until logged out."""
    user, _ = new_user(client, owner)
    headers = forged({"sub": user["id"]})
    assert client.get("/me", headers=headers).status_code == 200
    assert client.post("/auth/logout", headers=headers).status_code == 204
    problem(client.get("/me", headers=headers), 401, "unauthorized")
    assert login(client, user["email"])  # the password still logs in


def test_concurrent_refreshes_with_one_token_are_decided_one_after_the_other(
    connect: Callable[..., psycopg.Connection], owner: psycopg.Connection
) -> None:
    """Real concurrent connections, no grace: one rotation, then reuse (the session is revoked);
    never two rotations of one token."""
    user = make_user(owner)
    token = hashlib.sha256(b"t").digest()
    owner.execute("SELECT api.create_session(%s, %s)", (user["id"], token))
    barrier, outcomes = threading.Barrier(8), []

    def one(n: int) -> None:
        conn = connect()
        barrier.wait()
        try:
            row = conn.execute(
                "SELECT api.refresh_session(%s, %s, p_grace_seconds => 0)", (token, hashlib.sha256(b"%d" % n).digest())
            ).fetchone()
            assert row is not None
            outcomes.append(row[0]["outcome"])
        except psycopg.Error as exc:
            outcomes.append(exc.diag.sqlstate or "?")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The first rotates; every later one sees a spent token: reuse (the session is revoked by the
    # first of them; reuse is answered so even on a revoked session, and denies its access tokens).
    assert sorted(outcomes) == ["reused"] * 7 + ["rotated"], outcomes
    assert owner.execute("SELECT count(*) FROM refresh_tokens").fetchone() == (2,)
    assert owner.execute("SELECT revoked_reason FROM sessions").fetchone() == ("reuse",)


def test_nothing_is_accepted_before_the_deny_list_is_loaded() -> None:
    """A process that has not loaded the deny-list yet cannot tell a revoked token: 503, not a guess."""
    auth = Auth(SECRET, 900, 1)
    authorization = forged({"sub": str(uuid.uuid4())})["Authorization"]
    with pytest.raises(ApiError) as caught:
        auth.principal(authorization)
    assert caught.value.code == "busy"
    auth.revocations.replace({"sessions": [], "roles": []})
    assert auth.principal(authorization).role == "user"
    sid = jwt.decode(authorization.split()[1], SECRET, algorithms=["HS256"], issuer="booking-gateway")["sid"]
    auth.revocations.apply(f"s:{sid}")
    with pytest.raises(ApiError) as caught:
        auth.principal(authorization)  # cached as verified, refused all the same
    assert caught.value.code == "unauthorized"


def test_a_demotion_in_a_dba_transaction_applies_to_a_token_issued_meanwhile(
    client: TestClient, owner: psycopg.Connection
) -> None:
    """Review finding: a login while a DBA's transaction demotes the admin read the old role and
    was stamped after the change's time: the latest role change now applies whatever the iat."""
    admin, _ = new_user(client, owner, role="admin")
    event = make_event(owner, publish=False)
    with psycopg.connect(url_for(owner.info.dbname, "booking_owner")) as dba:  # a psql session: BEGIN ... COMMIT
        dba.execute("SELECT 1")  # the transaction (and its now()) starts here
        time.sleep(1.5)
        pair = signed_in(client, admin["email"])  # an admin logs in while the DBA is typing
        dba.execute("SELECT api.set_user_role(%s, 'user')", (admin["email"],))
        dba.commit()
    revocations = revocations_of(client)
    until(lambda: revocations.roles.get(admin["id"], ("", 0.0))[0] == "user")
    # The demotion "takes effect at once" for tokens issued before it: this one was.
    problem(client.get(f"/admin/events/{event['id']}", headers=bearer(pair)), 403, "forbidden")


def test_revoke_user_sessions_reaches_tokens_of_sessions_past_their_end(
    client: TestClient, owner: psycopg.Connection
) -> None:
    """Review finding: an access token refreshed just before the session's end outlives it."""
    user, _ = new_user(client, owner)
    pair = signed_in(client, user["email"])
    owner.execute("UPDATE sessions SET expires_at = now() + interval '1 second'")
    owner.commit()
    fresh = refresh(client, pair["refresh_token"]).json()  # access token valid JWT_TTL_SECONDS (15 min)
    time.sleep(1.2)  # the session reached its absolute end; its last access token has not
    assert client.get("/me", headers=bearer(fresh)).status_code == 200
    dba_call(owner, "revoke_user_sessions", p_email=user["email"])  # "ends every live session ... at once"
    time.sleep(0.3)
    problem(client.get("/me", headers=bearer(fresh)), 401, "unauthorized")


def test_bad_session_and_abuse_headers_get_4xx_never_500(dbname: str, owner: psycopg.Connection) -> None:
    with client_for(dbname, rate_limits=True) as c:
        user, _ = new_user(c, owner)
        pair = signed_in(c, user["email"])
        tt = make_ticket_type(owner, quantity=50)
        out = {}
        for name, headers in {
            "key-space": {"Idempotency-Key": "a b"},
            "key-256": {"Idempotency-Key": "a" * 256},
            "key-latin1": {"Idempotency-Key": "caf\xe9".encode("latin-1")},
            "xff-junk": {"X-Forwarded-For": "not-an-ip"},
        }.items():
            r = c.post(
                "/bookings/reserve",
                headers={**bearer(pair), **headers},
                json={"ticket_type_id": tt["id"], "quantity": 1},
            )
            out[name] = r.status_code
        for body in [{"refresh_token": "a" * 43}, {"refresh_token": "é" * 43}, {"refresh_token": 5}, {}]:
            out[str(body)[:30]] = c.post("/auth/refresh", json=body).status_code
        out["logout1"] = c.post("/auth/logout", headers=bearer(pair)).status_code
        out["logout2"] = c.post("/auth/logout", headers=bearer(pair)).status_code
        out["refresh-after-logout"] = c.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code
        assert 500 not in out.values(), out
