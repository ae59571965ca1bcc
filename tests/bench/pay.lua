-- tests/bench/pay.lua — POST /v1/orders/{id}/pay, each request paying a
-- different pending order (made beforehand by pay.sh) with a unique
-- Idempotency-Key.  PAY_FILE holds "token order_id" lines; past its end
-- the script pays order 0 (404), so a list that ran out shows as non-2xx.
-- Prints the BENCH lines of the shared scenarios' common.lua.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local list = {}
local next_i = 0
local run = os.getenv("RUN_ID") or tostring(os.time())
function init(args)
  for l in io.lines(os.getenv("PAY_FILE")) do
    local tok, id = l:match("^(%S+) (%d+)$")
    if tok then table.insert(list, { auth = "Bearer " .. tok, id = id }) end
  end
end
function request()
  next_i = next_i + 1
  local o = list[next_i] or { auth = list[1].auth, id = "0" }
  return wrk.format("POST", "/v1/orders/" .. o.id .. "/pay", {
    ["Authorization"] = o.auth,
    ["Idempotency-Key"] = run .. "-" .. next_i,
  })
end
