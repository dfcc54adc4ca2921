-- A GCRA rate limit shared by every server: `rate` requests a second on average, bursts of `burst`.
-- KEYS: the limit's key (string, ms of the theoretical arrival time). ARGV: now_ms, rate, burst.
-- Returns 0 when allowed, else the ms to wait before the next request would be.
local now = tonumber(ARGV[1])
local interval = 1000 / tonumber(ARGV[2])
local tolerance = interval * (tonumber(ARGV[3]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return math.ceil(allow_at - now)
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return 0
