-- Rate limits: GCRA counters per key in an unlogged table, rules in rate_limit_rules.
--
-- GCRA (generic cell rate algorithm) per key: emission interval T = period / max_requests,
-- tolerance = period - T. A hit at `now` is allowed when max(tat, now) - now <= tolerance; it
-- then moves tat to max(tat, now) + T. This is a rolling window of max_requests per period
-- (a full burst, then one every T). A refused hit does not move tat, so the wait it is told
-- (Retry-After) is exact: after max(tat, now) - now - tolerance the next hit is allowed.
--
-- Keys: '<class>:<scope>:<value>': 'bookings:user:<uuid>', 'browse:address:203.0.113.7',
-- 'auth:address:2001:db8:1:2::/64' (IPv6 keyed by its /64; the gateway normalises
-- addresses), 'login_failures:email:<e-mail, trimmed and lower-cased>'.
--
-- Counters are written in their own short transaction (the gateway's check call), never
-- together with booking locks; the rows of one call are locked in key order, so concurrent
-- calls cannot deadlock.

CREATE OR REPLACE FUNCTION api.check_rate_limits(p_classes text[], p_user_ids uuid[], p_addresses text[])
RETURNS TABLE (request integer, retry_after integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '2s'  -- a DBA's open transaction on a counter row: 503 busy, not a stall
AS $$
DECLARE
  v_n integer := coalesce(cardinality(p_classes), 0);
  v_now timestamptz := clock_timestamp();
  v_all_fit boolean;
  v_ri integer[];          -- (request, key) pairs, ordered by request: the request's position
  v_rj integer[];          -- ... and the key's position in v_key
  v_key text[];            -- the call's distinct keys, sorted
  v_t interval[];          -- their emission intervals
  v_tol interval[];        -- their tolerances
  v_cur timestamptz[];     -- their tat as stored now
  v_tat timestamptz[];     -- their tat before this call, then as the exact pass moves it
  v_total integer;
  v_m integer := 1;
  v_first integer;
  v_i integer;
  v_j integer;
  v_ok boolean;
  v_wait interval;
BEGIN
  IF v_n = 0 THEN
    RETURN;
  END IF;
  IF v_n > 1000 OR coalesce(cardinality(p_user_ids), 0) <> v_n OR coalesce(cardinality(p_addresses), 0) <> v_n THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'p_classes, p_user_ids and p_addresses must be aligned arrays of at most 1000 requests';
  END IF;

  -- Fast path, one statement: every key of the call (one per rule of a request's class that
  -- applies) with its number of hits h, upserted in key order (the row locks: no deadlock
  -- between concurrent calls). A key moves by h * T when all its h hits fit (last_ok), else it
  -- stays. When every key fits, every request passes: that is what the exact pass below would
  -- decide too, so the call is done with one write per key.
  WITH hits AS (
    SELECT rl.class || ':' || rl.scope || ':' || CASE rl.scope WHEN 'user' THEN r.u::text ELSE r.a END AS key,
           rl.period, rl.period / rl.max_requests AS t
      FROM unnest(p_classes, p_user_ids, p_addresses) AS r(c, u, a)
      JOIN rate_limit_rules rl
        ON rl.class = r.c
       AND ((rl.scope = 'user' AND r.u IS NOT NULL) OR (rl.scope = 'address' AND r.a IS NOT NULL))
  ), keys AS (
    SELECT key, min(period) AS period, count(*)::integer * min(t) AS step FROM hits GROUP BY key
  ), counted AS (
    -- A new key: fits when its h hits fit in an empty window ((h - 1) * T <= period - T).
    INSERT INTO rate_limit_counters AS c (key, tat, period, last_ok)
    -- (A new key that does not fit starts at now, the same as empty, for the exact pass.)
    SELECT k.key, CASE WHEN k.step <= k.period THEN v_now + k.step ELSE v_now END, k.period,
           k.step <= k.period
      FROM keys k ORDER BY k.key
    ON CONFLICT (key) DO UPDATE
       SET tat = CASE WHEN excluded.last_ok AND greatest(c.tat, v_now) + (excluded.tat - v_now) - v_now <= excluded.period
                      THEN greatest(c.tat, v_now) + (excluded.tat - v_now) ELSE c.tat END,
           last_ok = excluded.last_ok
                     AND greatest(c.tat, v_now) + (excluded.tat - v_now) - v_now <= excluded.period,
           period = excluded.period
    RETURNING c.last_ok
  )
  SELECT bool_and(last_ok) INTO v_all_fit FROM counted;
  IF v_all_fit IS NULL OR v_all_fit THEN
    RETURN;  -- no key (no rule applies), or everyone passes
  END IF;

  -- Exact pass (some key is over its limit): the rows are locked by the upsert. Each key's tat
  -- before this call: a key that moved moved by h * T from max(tat, now).
  WITH hits AS (
    SELECT r.i::integer AS i,
           rl.class || ':' || rl.scope || ':' || CASE rl.scope WHEN 'user' THEN r.u::text ELSE r.a END AS key,
           rl.period / rl.max_requests AS t,
           rl.period - rl.period / rl.max_requests AS tol
      FROM unnest(p_classes, p_user_ids, p_addresses) WITH ORDINALITY AS r(c, u, a, i)
      JOIN rate_limit_rules rl
        ON rl.class = r.c
       AND ((rl.scope = 'user' AND r.u IS NOT NULL) OR (rl.scope = 'address' AND r.a IS NOT NULL))
  ), ranked AS (
    SELECT h.*, dense_rank() OVER (ORDER BY h.key)::integer AS j, count(*) OVER (PARTITION BY h.key)::integer AS n
      FROM hits h
  ), keys AS (
    SELECT DISTINCT ON (j) j, key, t, tol, n FROM ranked ORDER BY j
  )
  SELECT (SELECT array_agg(i ORDER BY i, j) FROM ranked),
         (SELECT array_agg(j ORDER BY i, j) FROM ranked),
         array_agg(k.key ORDER BY k.j), array_agg(k.t ORDER BY k.j), array_agg(k.tol ORDER BY k.j),
         array_agg(c.tat ORDER BY k.j),
         array_agg(CASE WHEN c.last_ok THEN c.tat - k.n * k.t ELSE c.tat END ORDER BY k.j)
    INTO v_ri, v_rj, v_key, v_t, v_tol, v_cur, v_tat
    FROM keys k JOIN rate_limit_counters c USING (key);

  -- In arrival order: a request passes when every one of its keys allows it; only then do its
  -- keys move. A refused request is reported with the wait its slowest key needs.
  v_total := cardinality(v_ri);
  WHILE v_m <= v_total LOOP
    v_i := v_ri[v_m];
    v_first := v_m;
    v_ok := true;
    v_wait := interval '0';
    WHILE v_m <= v_total AND v_ri[v_m] = v_i LOOP
      v_j := v_rj[v_m];
      IF greatest(v_tat[v_j], v_now) - v_now > v_tol[v_j] THEN
        v_ok := false;
        v_wait := greatest(v_wait, greatest(v_tat[v_j], v_now) - v_now - v_tol[v_j]);
      END IF;
      v_m := v_m + 1;
    END LOOP;
    IF v_ok THEN
      FOR v_first IN v_first .. v_m - 1 LOOP
        v_j := v_rj[v_first];
        v_tat[v_j] := greatest(v_tat[v_j], v_now) + v_t[v_j];
      END LOOP;
    ELSE
      request := v_i;
      retry_after := greatest(1, ceil(extract(epoch FROM v_wait)))::integer;
      RETURN NEXT;
    END IF;
  END LOOP;

  UPDATE rate_limit_counters c SET tat = u.tat
    FROM unnest(v_key, v_tat, v_cur) AS u(key, tat, cur)
   WHERE c.key = u.key AND u.tat <> u.cur;
END;
$$;
COMMENT ON FUNCTION api.check_rate_limits(text[], uuid[], text[]) IS
  'The gateway''s rate-limit check for a batch of requests (aligned arrays: route class, the '
  'caller''s user id or NULL, the client address key or NULL). Returns the REFUSED requests '
  'only: (position in the arrays from 1, seconds to wait); no row = allowed. Requests are '
  'decided in array order (GCRA against every rule of the class in rate_limit_rules); a refused '
  'one counts nothing. Locks the counters of its keys in key order, in its own transaction. '
  'Raises BKVAL.';


CREATE OR REPLACE FUNCTION internal.login_attempt(p_email text)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_rule public.rate_limit_rules;
  v_now timestamptz := clock_timestamp();
  v_key text := 'login_failures:email:' || lower(btrim(p_email));
  v_t interval;
  v_tol interval;
  v_tat timestamptz;
BEGIN
  SELECT * INTO v_rule FROM public.rate_limit_rules r WHERE r.class = 'login_failures' AND r.scope = 'email';
  IF NOT FOUND OR p_email IS NULL THEN
    RETURN 0;
  END IF;
  v_t := v_rule.period / v_rule.max_requests;
  v_tol := v_rule.period - v_t;
  -- One attempt counted, atomically, BEFORE the password is checked: concurrent guesses wait
  -- on this row and each sees the others' counts (a check-then-count would let a burst through).
  INSERT INTO public.rate_limit_counters AS c (key, tat, period, last_ok)
  VALUES (v_key, v_now + v_t, v_rule.period, true)
  ON CONFLICT (key) DO UPDATE
     SET tat = greatest(c.tat, v_now) + v_t, period = excluded.period
   WHERE greatest(c.tat, v_now) - v_now <= v_tol
  RETURNING c.tat INTO v_tat;
  IF v_tat IS NOT NULL THEN
    RETURN 0;  -- counted: go on and check the password
  END IF;
  SELECT c.tat INTO v_tat FROM public.rate_limit_counters c WHERE c.key = v_key;
  RETURN greatest(1, ceil(extract(epoch FROM greatest(v_tat, v_now) - v_now - v_tol)))::integer;
END;
$$;
COMMENT ON FUNCTION internal.login_attempt(text) IS
  'The failed-login throttle (rule login_failures / email): counts one login attempt for an '
  'e-mail address (trimmed, lower-cased; known or not) and returns 0, or, when the address is '
  'throttled, counts nothing and returns the seconds to wait. api.record_login_success gives '
  'a successful attempt back, so only failures stay counted. Locks that address''s counter row.';


CREATE OR REPLACE FUNCTION api.record_login_success(p_email text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  -- The attempt api.get_user_credentials counted was a success: it counts nothing.
  UPDATE rate_limit_counters c SET tat = c.tat - r.period / r.max_requests
    FROM rate_limit_rules r
   WHERE c.key = 'login_failures:email:' || lower(btrim(p_email))
     AND r.class = 'login_failures' AND r.scope = 'email'
$$;
COMMENT ON FUNCTION api.record_login_success(text) IS
  'A login for this e-mail address succeeded: gives back the attempt api.get_user_credentials '
  '(p_count_attempt) counted, so only failed logins are throttled. Locks that counter row.';


CREATE OR REPLACE FUNCTION api.rate_limits()
RETURNS TABLE (class text, scope text, max_requests integer, period interval, emission_interval interval)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT r.class, r.scope, r.max_requests, r.period, r.period / r.max_requests
    FROM rate_limit_rules r ORDER BY r.class, r.scope
$$;
COMMENT ON FUNCTION api.rate_limits() IS
  '(DBA-only) The rate-limit rules in force: SELECT * FROM api.rate_limits(). Each allows '
  'max_requests per period per key (a rolling window; one more every emission_interval). '
  'Locks nothing.';


CREATE OR REPLACE FUNCTION api.set_rate_limit(p_class text, p_scope text, p_max_requests integer, p_period interval)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_rule rate_limit_rules;
BEGIN
  IF p_max_requests IS NULL THEN
    DELETE FROM rate_limit_rules WHERE class = p_class AND scope = p_scope RETURNING * INTO v_rule;
    RETURN json_build_object('class', p_class, 'scope', p_scope, 'removed', v_rule.class IS NOT NULL);
  END IF;
  IF p_class IS NULL OR p_scope IS NULL OR p_period IS NULL OR p_max_requests < 1
     OR p_period < interval '1 second' OR p_period > interval '1 day'
     OR p_class NOT IN ('auth', 'browse', 'bookings', 'admin', 'login_failures')
     OR p_scope NOT IN ('user', 'address', 'email')
     OR (p_class = 'login_failures') <> (p_scope = 'email') THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL',
      MESSAGE = 'class auth|browse|bookings|admin with scope user|address, or login_failures with scope email; '
                'max_requests >= 1; period 1 second .. 1 day';
  END IF;
  INSERT INTO rate_limit_rules (class, scope, max_requests, period)
  VALUES (p_class, p_scope, p_max_requests, p_period)
  ON CONFLICT (class, scope) DO UPDATE SET max_requests = EXCLUDED.max_requests, period = EXCLUDED.period
  RETURNING * INTO v_rule;
  RETURN json_build_object('class', v_rule.class, 'scope', v_rule.scope,
                           'max_requests', v_rule.max_requests, 'period', v_rule.period);
END;
$$;
COMMENT ON FUNCTION api.set_rate_limit(text, text, integer, interval) IS
  '(DBA-only) Sets a rate-limit rule, live for every gateway: '
  'SELECT api.set_rate_limit(''bookings'', ''user'', 120, ''1 minute''). A NULL max_requests '
  'removes the rule (no limit for that class and scope). Existing counters keep their state. '
  'Locks the rule row. Raises BKVAL.';


CREATE OR REPLACE FUNCTION api.rate_limit_state(p_key_prefix text)
RETURNS TABLE (key text, tat timestamptz, remaining integer, retry_after integer)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
  SELECT c.key, c.tat,
         CASE WHEN r.class IS NULL THEN NULL
              ELSE greatest(0, floor(extract(epoch FROM (r.period - (greatest(c.tat, now()) - now())))
                                     / extract(epoch FROM r.period / r.max_requests)))::integer END,
         CASE WHEN r.class IS NULL THEN NULL
              ELSE greatest(0, ceil(extract(epoch FROM greatest(c.tat, now()) - now()
                                                  - (r.period - r.period / r.max_requests))))::integer END
    FROM rate_limit_counters c
    LEFT JOIN rate_limit_rules r ON c.key LIKE r.class || ':' || r.scope || ':%'
   WHERE starts_with(c.key, coalesce(p_key_prefix, ''))
   ORDER BY c.key
   LIMIT 1000
$$;
COMMENT ON FUNCTION api.rate_limit_state(text) IS
  '(DBA-only) Counters whose key starts with a prefix (at most 1000): '
  'SELECT * FROM api.rate_limit_state(''login_failures:email:a@b.co''). remaining = requests '
  'allowed right now; retry_after = seconds until the next is allowed (0: now). Keys: '
  '<class>:<scope>:<user uuid | address | e-mail>. Locks nothing.';


CREATE OR REPLACE FUNCTION api.clear_rate_limit(p_key_prefix text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_count integer;
BEGIN
  IF p_key_prefix IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'BKVAL', MESSAGE = 'a key prefix is required ('''' clears every counter)';
  END IF;
  DELETE FROM rate_limit_counters c WHERE starts_with(c.key, p_key_prefix);
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;
COMMENT ON FUNCTION api.clear_rate_limit(text) IS
  '(DBA-only) Forgets the counters whose key starts with a prefix, e.g. lifts a login '
  'throttle: SELECT api.clear_rate_limit(''login_failures:email:a@b.co''). Returns how many. '
  'Locks those counter rows. Raises BKVAL.';


CREATE OR REPLACE FUNCTION api.purge_rate_limits()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  v_count integer;
BEGIN
  -- A counter whose tat has passed is the same as no counter.
  DELETE FROM rate_limit_counters c WHERE c.tat < now();
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$$;
COMMENT ON FUNCTION api.purge_rate_limits() IS
  '(DBA-only) pg_cron runs it every 10 minutes. Deletes the rate-limit counters that no longer limit '
  'anything (tat passed). Returns how many. Locks those rows.';
