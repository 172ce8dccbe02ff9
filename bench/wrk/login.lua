-- POST /login with the right password, round robin over $BENCH_LOGIN_USERS consumers
-- ($BENCH_LOGIN_PREFIX0, 1, ...), all with one CSRF cookie and its token (fetched once with
-- GET /login). No session cookie is sent, so every login creates a new session. Every answer
-- must be 303 to /login/done.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

local headers, users, prefix, rest, n

function init(args)
  users = tonumber(need_env("BENCH_LOGIN_USERS"))
  prefix = need_env("BENCH_LOGIN_PREFIX")
  rest = "&password=" .. need_env("BENCH_LOGIN_PASSWORD") .. "&csrf=" .. need_env("BENCH_CSRF") .. "&return_to="
  headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = need_env("BENCH_CSRF_COOKIE"),
  }
  n = thread_id * 7
end

function request()
  n = n + 1
  return wrk.format("POST", "/login", headers, "username=" .. prefix .. (n % users) .. rest)
end

function response(status, headers, body)
  local loc = headers["location"] or headers["Location"]
  if status ~= 303 or loc ~= "/login/done" then
    bad = bad + 1
  end
end
