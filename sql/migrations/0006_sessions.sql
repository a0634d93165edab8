-- depends: 0003_reserve_core
-- Sessions (issue 9): a login is a session; short access tokens carry its id (`sid`); opaque
-- refresh tokens, stored as sha256 only, rotate on every use (a spent one presented again
-- revokes the session). Revoked session ids form a deny-list that every gateway holds in
-- memory, fed by NOTIFY on channel booking_revocations and reloaded whole on every reconnect.

CREATE TABLE sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,  -- absolute end (SESSION_TTL_SECONDS): no refresh after it
  revoked_at timestamptz,           -- no refresh after it
  revoked_reason text,
  CONSTRAINT chk_sessions_revoked CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL)),
  CONSTRAINT chk_sessions_reason CHECK (revoked_reason IN ('logout', 'reuse', 'role_changed', 'dba'))
);
CREATE INDEX idx_sessions_user_id ON sessions(user_id);
CREATE INDEX idx_sessions_expires_at ON sessions(expires_at);
COMMENT ON TABLE sessions IS
  'One row per login. Access tokens carry its id as `sid`. revoked_at ends refreshing; whether '
  'its access tokens are refused too is revoked_sessions (a role change stops refresh only).';

CREATE TABLE refresh_tokens (
  token_hash bytea PRIMARY KEY,     -- sha256 of the opaque token; the token itself is never stored
  session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  parent_hash bytea,                -- the token it was rotated from (NULL: issued at login)
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,  -- idle limit (REFRESH_TTL_SECONDS), never past the session's end
  used_at timestamptz,              -- spent: presenting it again after the grace revokes the session
  CONSTRAINT chk_refresh_tokens_hash CHECK (length(token_hash) = 32)
);
CREATE INDEX idx_refresh_tokens_session_id ON refresh_tokens(session_id);
CREATE INDEX idx_refresh_tokens_expires_at ON refresh_tokens(expires_at);
COMMENT ON TABLE refresh_tokens IS
  'Refresh tokens by sha256. A rotation marks the token used and adds its child.';

-- The deny-list the gateways hold. No FK: it outlives the session rows (a deleted user's
-- sessions go with the user) and is kept 24 h, longer than any access token lives
-- (JWT_TTL_SECONDS is capped at 86400).
CREATE TABLE revoked_sessions (
  session_id uuid PRIMARY KEY,
  revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_revoked_sessions_revoked_at ON revoked_sessions(revoked_at);
COMMENT ON TABLE revoked_sessions IS
  'Sessions whose access tokens every gateway refuses (logout, reuse, DBA, user deleted). Kept 24 h.';

-- Role changes the gateways apply to tokens issued before them (a demotion takes effect at once).
CREATE TABLE role_changes (
  user_id uuid PRIMARY KEY,
  role text NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_role_changes_changed_at ON role_changes(changed_at);
COMMENT ON TABLE role_changes IS
  'The latest role change of each user in the last 24 h; gateways apply it to older tokens.';

-- Deleting a user ends their sessions everywhere at once: a BEFORE trigger, while the session
-- rows (deleted by the cascade) can still be read.
CREATE FUNCTION revoke_deleted_user_sessions()
RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  INSERT INTO public.revoked_sessions (session_id)
  SELECT s.id FROM public.sessions s WHERE s.user_id = OLD.id
  ON CONFLICT (session_id) DO UPDATE SET revoked_at = EXCLUDED.revoked_at;
  PERFORM pg_notify('booking_revocations', 's:' || s.id) FROM public.sessions s WHERE s.user_id = OLD.id;
  RETURN OLD;
END;
$$;
CREATE TRIGGER revoke_deleted_user_sessions
  BEFORE DELETE ON users
  FOR EACH ROW EXECUTE FUNCTION revoke_deleted_user_sessions();
