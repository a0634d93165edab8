-- Sessions: login sessions, rotated refresh tokens, the deny-list the gateways hold.
-- The gateway makes the opaque refresh tokens and sends only their sha256 here.
-- Lock order: a sessions row before its refresh_tokens rows (as ON DELETE CASCADE takes them).
-- Every revocation of access tokens goes to revoked_sessions and NOTIFY booking_revocations
-- 's:<session id>'; a role change NOTIFYs 'r:<user id>:<role>:<epoch seconds>'.

CREATE OR REPLACE FUNCTION internal.revoke_sessions(p_session_ids uuid[], p_reason text, p_deny boolean)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_ended integer;
BEGIN
  -- Ends refreshing (the first reason stays), and with p_deny the access tokens too.
  -- Rows locked in id order: two revocations of overlapping sessions cannot deadlock.
  UPDATE public.sessions s
     SET revoked_at = now(), revoked_reason = p_reason
   WHERE s.id IN (SELECT x.id FROM public.sessions x
                   WHERE x.id = ANY (p_session_ids) AND x.revoked_at IS NULL
                   ORDER BY x.id FOR NO KEY UPDATE);
  GET DIAGNOSTICS v_ended = ROW_COUNT;
  IF p_deny THEN
    INSERT INTO public.revoked_sessions (session_id)
    SELECT DISTINCT x FROM unnest(p_session_ids) x ORDER BY x
    ON CONFLICT (session_id) DO NOTHING;
    PERFORM pg_notify('booking_revocations', 's:' || x) FROM unnest(p_session_ids) x;
  END IF;
  RETURN v_ended;
END;
$$;
COMMENT ON FUNCTION internal.revoke_sessions(uuid[], text, boolean) IS
  'Marks sessions revoked (no more refresh); with p_deny also puts them on the deny-list and '
  'notifies the gateways (their access tokens are refused at once). Returns sessions newly revoked.';


CREATE OR REPLACE FUNCTION internal.check_refresh_args(p_hash bytea, p_ttl_seconds integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_hash IS NULL OR length(p_hash) <> 32 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'a refresh token hash is 32 bytes (sha256)';
  END IF;
  IF p_ttl_seconds IS NULL OR p_ttl_seconds < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'lifetimes are at least 1 second';
  END IF;
END;
$$;
COMMENT ON FUNCTION internal.check_refresh_args(bytea, integer) IS
  'A new refresh token''s hash is 32 bytes and its lifetime at least 1 s. Raises BKVAL.';


CREATE OR REPLACE FUNCTION api.create_session(
  p_user_id uuid, p_refresh_hash bytea,
  p_session_ttl_seconds integer DEFAULT 2592000, p_refresh_ttl_seconds integer DEFAULT 1209600)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_session sessions;
  v_role text;
BEGIN
  PERFORM internal.check_refresh_args(p_refresh_hash, p_refresh_ttl_seconds);
  PERFORM internal.check_refresh_args(p_refresh_hash, p_session_ttl_seconds);
  INSERT INTO sessions (user_id, expires_at)
  SELECT u.id, now() + make_interval(secs => p_session_ttl_seconds) FROM users u WHERE u.id = p_user_id
  RETURNING * INTO v_session;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'no such user';
  END IF;
  INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
  VALUES (p_refresh_hash, v_session.id,
          least(now() + make_interval(secs => p_refresh_ttl_seconds), v_session.expires_at));
  SELECT u.role INTO v_role FROM users u WHERE u.id = p_user_id;
  RETURN json_build_object('session_id', v_session.id, 'user_id', v_session.user_id, 'role', v_role,
                           'expires_at', v_session.expires_at);
END;
$$;
COMMENT ON FUNCTION api.create_session(uuid, bytea, integer, integer) IS
  'Login, after the gateway checked the password: a new session (absolute lifetime '
  'p_session_ttl_seconds) and its first refresh token, given as its sha256 (idle lifetime '
  'p_refresh_ttl_seconds). Returns {session_id, user_id, role, expires_at}; the access token '
  'carries session_id as `sid`. Locks nothing beyond the new rows. Raises BKVAL, BKUNA (no such user).';


CREATE OR REPLACE FUNCTION api.refresh_session(
  p_refresh_hash bytea, p_new_refresh_hash bytea,
  p_refresh_ttl_seconds integer DEFAULT 1209600, p_grace_seconds integer DEFAULT 10)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_session_id uuid;
  v_session sessions;
  v_token refresh_tokens;
  v_outcome text;
BEGIN
  PERFORM internal.check_refresh_args(p_new_refresh_hash, p_refresh_ttl_seconds);
  IF p_grace_seconds IS NULL OR p_grace_seconds < 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'the grace period is 0 seconds or more';
  END IF;
  SELECT t.session_id INTO v_session_id FROM refresh_tokens t WHERE t.token_hash = p_refresh_hash;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'unknown refresh token';
  END IF;
  -- The session row first (lock order), so refreshes of one session take turns; then the token.
  SELECT * INTO v_session FROM sessions s WHERE s.id = v_session_id FOR NO KEY UPDATE;
  SELECT * INTO v_token FROM refresh_tokens t WHERE t.token_hash = p_refresh_hash FOR UPDATE;
  IF v_session.id IS NULL OR v_token.token_hash IS NULL THEN  -- deleted meanwhile
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'unknown refresh token';
  END IF;
  IF v_session.expires_at <= now() OR v_token.expires_at <= now() THEN
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'the refresh token has expired';
  END IF;
  -- clock_timestamp(), not now(): this transaction may have begun before the one that spent
  -- the token, and waited for it on the session lock.
  IF v_token.used_at IS NOT NULL
     AND v_token.used_at <= clock_timestamp() - make_interval(secs => p_grace_seconds) THEN
    -- A spent token again (RFC 9700 4.14.2): someone holds a copy. End the whole session (also
    -- one that only stopped refreshing, after a role change: its access tokens go on the
    -- deny-list now), and say so by the answer rather than an error, so this revocation commits.
    PERFORM internal.revoke_sessions(ARRAY[v_session.id], 'reuse', true);
    RETURN json_build_object('outcome', 'reused', 'session_id', v_session.id, 'user_id', v_session.user_id);
  END IF;
  IF v_session.revoked_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKUNA', MESSAGE = 'the session has been revoked';
  END IF;

  IF v_token.used_at IS NULL THEN
    v_outcome := 'rotated';
    UPDATE refresh_tokens SET used_at = now() WHERE token_hash = p_refresh_hash;
  ELSE
    v_outcome := 'grace';  -- two tabs refreshing at once: each gets a pair
  END IF;

  INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, expires_at)
  VALUES (p_new_refresh_hash, v_session.id, p_refresh_hash,
          least(now() + make_interval(secs => p_refresh_ttl_seconds), v_session.expires_at));
  RETURN json_build_object(
    'outcome', v_outcome, 'session_id', v_session.id, 'user_id', v_session.user_id,
    'role', (SELECT u.role FROM users u WHERE u.id = v_session.user_id));
END;
$$;
COMMENT ON FUNCTION api.refresh_session(bytea, bytea, integer, integer) IS
  'Rotates a refresh token (given as its sha256): marks it used and stores the new one '
  '(p_new_refresh_hash). Returns {outcome, session_id, user_id, role}: outcome "rotated"; '
  '"grace" when the token was spent less than p_grace_seconds ago (two tabs refreshing at '
  'once: another pair); "reused" when it was spent before that: the whole session is revoked '
  '(deny-list + NOTIFY, committed) and no pair is issued. Locks the session row, then the '
  'token row. Raises BKUNA (unknown, expired, or the session revoked), BKVAL.';


CREATE OR REPLACE FUNCTION api.end_session(p_user_id uuid, p_session_id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
  IF p_session_id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'p_session_id is required';
  END IF;
  -- The gateway passes the session of a token it verified; a row gone already (purged after
  -- its end) still goes on the deny-list, so the token stops working anyway.
  IF EXISTS (SELECT 1 FROM sessions s WHERE s.id = p_session_id AND s.user_id IS DISTINCT FROM p_user_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'session not found';
  END IF;
  PERFORM internal.revoke_sessions(ARRAY[p_session_id], 'logout', true);
END;
$$;
COMMENT ON FUNCTION api.end_session(uuid, uuid) IS
  'Logout: revokes the caller''s session (its refresh tokens and, via the deny-list and NOTIFY '
  'booking_revocations, its access tokens on every gateway). Locks the session row. Raises '
  'BKNTF (another user''s session), BKVAL.';


CREATE OR REPLACE FUNCTION api.revocation_state()
RETURNS json
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT json_build_object(
    'sessions', coalesce((SELECT json_agg(r.session_id) FROM revoked_sessions r
                           WHERE r.revoked_at > now() - interval '24 hours'), '[]'::json),
    'roles', coalesce((SELECT json_agg(json_build_object(
                                'user_id', c.user_id, 'role', c.role,
                                'changed_at', extract(epoch FROM c.changed_at)::float8))
                         FROM role_changes c
                        WHERE c.changed_at > now() - interval '24 hours'), '[]'::json))
$$;
COMMENT ON FUNCTION api.revocation_state() IS
  'What every gateway holds in memory, loaded whole when its listener (re)connects: '
  '{sessions: [revoked session ids], roles: [{user_id, role, changed_at (epoch s)}]} of the '
  'last 24 h. Locks nothing.';


CREATE OR REPLACE FUNCTION api.user_sessions(p_email text)
RETURNS TABLE (session_id uuid, created_at timestamptz, expires_at timestamptz, revoked_at timestamptz,
               revoked_reason text, access_denied boolean, refresh_tokens bigint, last_refresh timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT s.id, s.created_at, s.expires_at, s.revoked_at, s.revoked_reason,
         EXISTS (SELECT 1 FROM revoked_sessions r WHERE r.session_id = s.id),
         (SELECT count(*) FROM refresh_tokens t WHERE t.session_id = s.id),
         (SELECT max(t.created_at) FROM refresh_tokens t WHERE t.session_id = s.id AND t.parent_hash IS NOT NULL)
    FROM sessions s JOIN users u ON u.id = s.user_id
   WHERE u.email = lower(btrim(p_email))
   ORDER BY s.created_at DESC
$$;
COMMENT ON FUNCTION api.user_sessions(text) IS
  '(DBA-only) A user''s sessions, newest first: SELECT * FROM api.user_sessions(''a@b.co''). '
  'access_denied: its access tokens are refused (deny-list); revoked_at alone stops refreshing. '
  'Locks nothing.';


CREATE OR REPLACE FUNCTION api.revoke_session(p_session_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = p_session_id) THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'session not found';
  END IF;
  RETURN internal.revoke_sessions(ARRAY[p_session_id], 'dba', true) > 0;
END;
$$;
COMMENT ON FUNCTION api.revoke_session(uuid) IS
  '(DBA-only) Ends one session at once on every gateway (refresh and access tokens). Returns '
  'false when it was revoked already (it is denied all the same). Locks the session row. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.revoke_user_sessions(p_email text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_user_id uuid;
BEGIN
  SELECT u.id INTO v_user_id FROM users u WHERE u.email = lower(btrim(p_email));
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'user not found';
  END IF;
  RETURN internal.revoke_sessions(
    -- Also sessions past their end: an access token refreshed just before the end lives on
    -- for up to JWT_TTL_SECONDS (purge keeps ended sessions 24 h for this).
    ARRAY(SELECT s.id FROM sessions s WHERE s.user_id = v_user_id ORDER BY s.id),
    'dba', true);
END;
$$;
COMMENT ON FUNCTION api.revoke_user_sessions(text) IS
  '(DBA-only) Ends every live session of a user at once on every gateway: '
  'SELECT api.revoke_user_sessions(''a@b.co''). Returns how many were newly revoked. Locks '
  'those session rows. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.purge_sessions()
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_tokens integer;
  v_sessions integer;
  v_denied integer;
  v_roles integer;
BEGIN
  -- 24 h: longer than any access token lives (JWT_TTL_SECONDS <= 86400).
  -- Ended sessions are kept 24 h too, so a DBA can still revoke the access tokens refreshed
  -- just before their end.
  DELETE FROM sessions WHERE expires_at < now() - interval '24 hours' OR revoked_at < now() - interval '24 hours';
  GET DIAGNOSTICS v_sessions = ROW_COUNT;
  DELETE FROM refresh_tokens WHERE expires_at <= now();
  GET DIAGNOSTICS v_tokens = ROW_COUNT;
  DELETE FROM revoked_sessions WHERE revoked_at < now() - interval '24 hours';
  GET DIAGNOSTICS v_denied = ROW_COUNT;
  DELETE FROM role_changes WHERE changed_at < now() - interval '24 hours';
  GET DIAGNOSTICS v_roles = ROW_COUNT;
  RETURN json_build_object('sessions', v_sessions, 'refresh_tokens', v_tokens,
                           'revoked_sessions', v_denied, 'role_changes', v_roles);
END;
$$;
COMMENT ON FUNCTION api.purge_sessions() IS
  '(DBA-only) Deletes ended sessions (past their end or revoked, over 24 h ago, with their '
  'tokens), expired refresh tokens, and deny-list and role-change rows older than 24 h. '
  'pg_cron runs it every 10 minutes. Returns the counts deleted ({sessions, refresh_tokens '
  '(expired ones of live sessions), revoked_sessions, role_changes}).';
