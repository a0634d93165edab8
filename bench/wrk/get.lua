-- GET WRK_PATH (no token): /events (cached), /events/{slug} (live), /readyz (the ceiling).
function request()
  return wrk.format("GET", os.getenv("WRK_PATH"))
end
