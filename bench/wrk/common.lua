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
