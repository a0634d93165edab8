-- Shared by the wrk scripts: many distinct users' tokens (lines "user_id token" in TOKENS_FILE),
-- handed out round-robin per thread, so no single user's row is the bottleneck.
tokens = {}
token_of = {}
local next_token = 1

function load_tokens()
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    local user, tok = string.match(line, "^(%S+) (%S+)$")
    tokens[#tokens + 1] = tok
    token_of[user] = tok
  end
  next_token = math.random(#tokens)
end

function token()
  next_token = next_token % #tokens + 1
  return tokens[next_token]
end

-- wrk calls done() once, in the main thread, after its text report. It prints one JSON line with
-- the exact figures (latencies in microseconds, as wrk records them; the text report rounds them,
-- e.g. 1.37s), which the runner (bench/__main__.py) parses. wrk's Lua has no JSON library.
function done(summary, latency, requests)
  local e = summary.errors
  local parts = {
    string.format('"duration_us":%.0f', summary.duration),
    string.format('"requests":%.0f', summary.requests),
    string.format('"bytes":%.0f', summary.bytes),
    string.format('"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"mean":%.3f,"stdev":%.3f,"max":%.0f,'
      .. '"p50":%.0f,"p90":%.0f,"p95":%.0f,"p99":%.0f,"p99.9":%.0f}',
      latency.mean, latency.stdev, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(95), latency:percentile(99), latency:percentile(99.9)),
  }
  io.write('{"wrk_done":1,', table.concat(parts, ","), "}\n")
end
