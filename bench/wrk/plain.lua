-- GET of the URL given to wrk (discovery, JWKS, userinfo with -H): wrk counts statuses above
-- 399 itself; no response() here, so wrk skips parsing headers and bodies.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
