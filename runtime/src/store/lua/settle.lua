-- Puts a picked tenant back in the rotation at its next due time (or out of it when it has no work left),
-- unless someone announced new work meanwhile: then the earliest of that and `next` counts (work announced
-- while the tenant was held, even due after the hold, is never dropped). KEYS: the rotation (zset), the
-- announced due times (hash). ARGV: tenant, held score, next due ms or -1.
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
local next = tonumber(ARGV[3])
local announced = redis.call('HGET', KEYS[2], ARGV[1])
if announced then
  redis.call('HDEL', KEYS[2], ARGV[1])
  announced = tonumber(announced)
  if next < 0 or announced < next then next = announced end
end
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
