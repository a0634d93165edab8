-- Users: registration, login lookup, profile, roles.
-- Passwords are hashed in the gateway (argon2); the database only stores the hash.

CREATE OR REPLACE FUNCTION api.register_user(p_email text, p_password_hash text, p_full_name text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_email text := lower(btrim(p_email));
  v_user users;
BEGIN
  IF v_email IS NULL OR length(v_email) > 255
     OR v_email !~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'email is not a valid address';
  END IF;
  IF p_password_hash IS NULL OR length(p_password_hash) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'password_hash is required';
  END IF;
  IF p_full_name IS NULL OR length(btrim(p_full_name)) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'full_name must be 1 to 255 characters';
  END IF;

  INSERT INTO users (email, password_hash, full_name)
  VALUES (v_email, p_password_hash, btrim(p_full_name))
  ON CONFLICT (email) DO NOTHING
  RETURNING * INTO v_user;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKEML', MESSAGE = 'a user with this email exists';
  END IF;
  RETURN internal.user_json(v_user);
END;
$$;
COMMENT ON FUNCTION api.register_user(text, text, text) IS
  'Creates a user with role "user" and returns it as JSON. The e-mail is trimmed and '
  'lower-cased. Pass a password HASH (the gateway uses argon2). Locks nothing beyond the new '
  'row. Raises BKVAL (bad e-mail/name), BKEML (e-mail taken).';


CREATE OR REPLACE FUNCTION api.get_user_credentials(p_email text, p_count_attempt boolean DEFAULT false)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_email text := lower(btrim(p_email));
  v_wait integer := 0;
BEGIN
  -- The failed-login throttle (sql/functions/70_rate_limits.sql), in this call so login needs
  -- no extra round trip: the attempt is counted before the password is checked, the same for
  -- known and unknown addresses.
  IF p_count_attempt THEN
    v_wait := internal.login_attempt(v_email);
  END IF;
  RETURN (SELECT json_build_object('id', u.id, 'role', u.role, 'password_hash', u.password_hash,
                                   'retry_after', nullif(v_wait, 0))
            FROM (SELECT v_email AS email) e
            LEFT JOIN users u ON u.email = e.email);
END;
$$;
COMMENT ON FUNCTION api.get_user_credentials(text, boolean) IS
  'Login lookup: {id, role, password_hash, retry_after} for an e-mail; id, role and '
  'password_hash are NULL when there is no such user (the gateway then verifies against a '
  'dummy hash so timing does not tell). With p_count_attempt (the gateway, rate limits on) it '
  'first counts one attempt against the failed-login throttle: retry_after is then the seconds '
  'to wait when the address is throttled (nothing counted), else NULL; a successful login '
  'gives the attempt back (api.record_login_success). Locks only that counter row.';


CREATE OR REPLACE FUNCTION api.get_user(p_user_id uuid)
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_user users;
BEGIN
  SELECT * INTO v_user FROM users WHERE id = p_user_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'user not found';
  END IF;
  RETURN internal.user_json(v_user);
END;
$$;
COMMENT ON FUNCTION api.get_user(uuid) IS
  'A user as JSON {id, email, full_name, role, created_at}. Locks nothing. Raises BKNTF.';


CREATE OR REPLACE FUNCTION api.set_user_role(p_email text, p_role text)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_user users;
  v_old_role text;
  v_change role_changes;
BEGIN
  IF p_role IS NULL OR p_role NOT IN ('admin', 'user') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'role must be admin or user';
  END IF;
  SELECT u.role INTO v_old_role FROM users u WHERE u.email = lower(btrim(p_email)) FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'BKNTF', MESSAGE = 'user not found';
  END IF;
  UPDATE users SET role = p_role WHERE email = lower(btrim(p_email)) RETURNING * INTO v_user;
  IF v_old_role IS DISTINCT FROM p_role THEN
    -- At once (issue 9): every gateway applies the new role to the user's older tokens, and the
    -- user's sessions can no longer be refreshed (their next token comes from a new login).
    INSERT INTO role_changes AS c (user_id, role) VALUES (v_user.id, p_role)
    ON CONFLICT (user_id) DO UPDATE SET role = EXCLUDED.role, changed_at = EXCLUDED.changed_at
    RETURNING * INTO v_change;
    PERFORM pg_notify('booking_revocations',
                      format('r:%s:%s:%s', v_change.user_id, v_change.role, extract(epoch FROM v_change.changed_at)));
    PERFORM internal.revoke_sessions(
      ARRAY(SELECT s.id FROM sessions s WHERE s.user_id = v_user.id AND s.revoked_at IS NULL ORDER BY s.id),
      'role_changed', false);
  END IF;
  RETURN internal.user_json(v_user);
END;
$$;
COMMENT ON FUNCTION api.set_user_role(text, text) IS
  '(DBA-only) Sets a user''s role (admin | user): SELECT api.set_user_role(''a@b.co'', ''admin''). '
  'A change takes effect at once: every gateway applies the new role to the user''s tokens '
  '(role_changes + NOTIFY booking_revocations), and the user''s sessions stop refreshing (log in '
  'again). Locks the user row, then the user''s session rows. Raises BKVAL, BKNTF.';
