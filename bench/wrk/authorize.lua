-- GET /authorize with a session cookie (in the URL and -H given to wrk). Every answer must be
-- 302 with a code in its Location; each thread writes its codes, one a line, to
-- $BENCH_CODES_DIR/$BENCH_CODES_PREFIX-<thread>.txt for the token scenario.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

local out

function init(args)
  local path = string.format("%s/%s-%d.txt", need_env("BENCH_CODES_DIR"), need_env("BENCH_CODES_PREFIX"), thread_id)
  out = assert(io.open(path, "w"))
  out:setvbuf("line")
end

function response(status, headers, body)
  local loc = headers["location"] or headers["Location"]
  local code = loc and loc:match("[?&]code=([^&#]+)")
  if status == 302 and code then
    out:write(code, "\n")
  else
    bad = bad + 1
  end
end
