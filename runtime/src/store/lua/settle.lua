-- Puts a picked tenant back in the rotation at its next due time (or out of it when it has no work left),
-- unless someone announced new work meanwhile: then the earlier time stays. KEYS: the rotation (zset).
-- ARGV: tenant, held score, next due ms or -1.
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
local next = tonumber(ARGV[3])
if cur and tonumber(cur) == tonumber(ARGV[2]) then
  if next >= 0 then
    redis.call('ZADD', KEYS[1], next, ARGV[1])
  else
    redis.call('ZREM', KEYS[1], ARGV[1])
  end
elseif next >= 0 then
  redis.call('ZADD', KEYS[1], 'LT', next, ARGV[1])
end
return 1
