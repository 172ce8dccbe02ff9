-- POST /token: each request redeems one pre-minted code, never the same one twice, with
-- client_secret_basic. Thread N reads its codes from $BENCH_CODES_DIR/token-N.txt. Anything
-- but 200 counts as an error. A thread that runs out of codes stops and says so (the run
-- then fails: its rate would be understated).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

local codes, next_code = {}, 0
local headers, tail

function init(args)
  local f = assert(io.open(string.format("%s/token-%d.txt", need_env("BENCH_CODES_DIR"), thread_id)))
  for line in f:lines() do
    if line ~= "" then
      codes[#codes + 1] = line
    end
  end
  f:close()
  headers = {
    ["Authorization"] = "Basic " .. need_env("BENCH_BASIC"),
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }
  tail = "&redirect_uri=" .. need_env("BENCH_REDIRECT_URI_ENC")
end

function request()
  next_code = next_code + 1
  if next_code > #codes then
    exhausted = 1
    wrk.thread:stop()
    return wrk.format("GET", "/healthz")
  end
  return wrk.format("POST", "/token", headers, "grant_type=authorization_code&code=" .. codes[next_code] .. tail)
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  end
end
