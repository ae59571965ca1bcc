-- GET /v1/accounts/{id} as its owner, the logged-in users in turn
-- (tests/bench/reads.sh).  SESSIONS="uid:token:account ..."
local reqs, i = {}, 0
function init(args)
  for uid, tok, acct in string.gmatch(os.getenv("SESSIONS"), "(%d+):([^:%s]+):(%d+)") do
    table.insert(reqs, wrk.format("GET", "/v1/accounts/" .. acct, { ["Authorization"] = "Bearer " .. tok }))
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
