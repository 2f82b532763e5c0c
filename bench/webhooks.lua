-- wrk script for bench/webhooks.sh: each thread sends its share of the pre-signed
-- deliveries in $WEBHOOK_REQUESTS (bench/webhooks_requests.py), each once, to $WEBHOOK_PATH.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  thread:set("nthreads", 0)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local total = counter
  requests = {}
  local path = os.getenv("WEBHOOK_PATH") or "/api/v1/webhooks/bench"
  local index = 0
  for line in io.lines(os.getenv("WEBHOOK_REQUESTS")) do
    if index % (tonumber(os.getenv("WRK_THREADS")) or 1) == id then
      local mid, ts, sig, body = line:match("([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)")
      local headers = {}
      headers["webhook-id"] = mid
      headers["webhook-timestamp"] = ts
      headers["webhook-signature"] = sig
      headers["Content-Type"] = "application/json"
      table.insert(requests, wrk.format("POST", path, headers, body))
    end
    index = index + 1
  end
  position = 0
end

function request()
  position = position + 1
  if position > #requests then
    position = 1 -- ran out: replays from here on (answered 200 "duplicate", not counted)
  end
  return requests[position]
end
