-- wrk script for bench/bench.py's distinct-token workload over HTTP/1.1: every path in the
-- file (one a line) is requested exactly once, over all of wrk's connections (run it with one
-- thread, -t1, so that they share this script's state).
--
--   wrk -t1 -c16 -d120s -s bench/distinct.lua http://127.0.0.1:PORT -- PATHS_FILE
--
-- wrk itself always runs for -d seconds and walks nothing in order; h2load walks a URI list
-- from the top for each connection, so with N connections every token would be sent N times
-- (and a token cache would answer all but the first). Here, once every path has been sent, a
-- connection that asks for another request gets an empty one (nothing is written, it waits),
-- and the response to the last path prints the result and ends wrk (-d is only a timeout):
--
--   distinct-h1: SENT sent, ANSWERED answered, OK 2xx in SECONDS s
--
-- SECONDS runs from the first request to the last response (CLOCK_MONOTONIC through LuaJIT's
-- FFI: Lua's own clocks are CPU time or whole seconds). If -d runs out first, done() prints
-- "distinct-h1: incomplete" with wrk's error counts.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local paths = {}
local sent, answered, ok, first = 0, 0, 0, nil
-- wrk 4.x calls request() once in the first thread's state before it connects, to check the
-- script's request and count the requests in it (pipelining); that one is never sent.
local checked = false

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
end

function request()
  if not checked then
    checked = true
    return wrk.format("GET", paths[1])
  end
  if sent >= #paths then
    return ""
  end
  sent = sent + 1
  if sent == 1 then
    first = now()
  end
  return wrk.format("GET", paths[sent])
end

function response(status)
  answered = answered + 1
  if status >= 200 and status < 300 then
    ok = ok + 1
  end
  if answered == #paths then
    io.write(string.format("distinct-h1: %d sent, %d answered, %d 2xx in %.6f s\n", sent, answered, ok, now() - first))
    io.flush()
    os.exit(0)
  end
end

function done(summary)
  local e = summary.errors
  io.write(string.format("distinct-h1: incomplete after %d responses; errors: connect %d, read %d, write %d, "
    .. "status %d, timeout %d\n", summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
