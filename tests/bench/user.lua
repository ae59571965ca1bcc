-- GET /v1/users/{random id in 1..USERS} (tests/bench/reads.sh)
local n = tonumber(os.getenv("USERS") or "1000")
function init(args) math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6)) end
function request() return wrk.format("GET", "/v1/users/" .. math.random(1, n)) end
