-- wrk script for benches/enforce.sh: every request to /v1/check carries a different token,
-- so every check misses the verdict cache.
--   wrk ... -s benches/enforce_tokens.lua URL forged   (default) a well-formed HS256 JWT with
--        random claims (`did`, `jti`) and a random signature: parsed, then the HMAC is
--        computed and rejected (verdict bad-signature)
--   wrk ... -s benches/enforce_tokens.lua URL garbage  48 random characters (verdict malformed)
-- The nginx auth_request headers come from wrk's -H options (X-Original-URI, ...).

local mode = "forged"
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

local function b64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local k = #out
    out[k + 1] = alphabet:sub(math.floor(n / 262144) % 64 + 1, math.floor(n / 262144) % 64 + 1)
    out[k + 2] = alphabet:sub(math.floor(n / 4096) % 64 + 1, math.floor(n / 4096) % 64 + 1)
    if b then out[k + 3] = alphabet:sub(math.floor(n / 64) % 64 + 1, math.floor(n / 64) % 64 + 1) end
    if c then out[k + 4] = alphabet:sub(n % 64 + 1, n % 64 + 1) end
  end
  return table.concat(out)
end

local function random_chars(n)
  local t = {}
  for i = 1, n do
    local r = math.random(1, 64)
    t[i] = alphabet:sub(r, r)
  end
  return table.concat(t)
end

local header = b64url('{"alg":"HS256","typ":"JWT"}')
local exp = 0

function init(args)
  if args[1] then mode = args[1] end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  exp = os.time() + 3600
end

function request()
  local token
  if mode == "garbage" then
    token = random_chars(48)
  else
    local claims = string.format('{"exp":%d,"did":"%s","jti":"%s"}', exp, random_chars(22), random_chars(16))
    token = header .. "." .. b64url(claims) .. "." .. random_chars(43)
  end
  wrk.headers["Approov-Token"] = token
  return wrk.format("GET", "/v1/check")
end
