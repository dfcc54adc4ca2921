-- Claims one task of one tenant. KEYS: ready (list), timers (zset), inflight (zset of "worker\ttask").
-- ARGV: now_ms, lease_until_ms, worker. Returns { task or false, next_eligible_ms or -1 }.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
if #due > 0 then
  redis.call('ZREM', KEYS[2], unpack(due))
  redis.call('RPUSH', KEYS[1], unpack(due))
end
local lost = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
for _, member in ipairs(lost) do
  redis.call('ZREM', KEYS[3], member)
  local tab = string.find(member, '\t', 1, true)
  if tab then redis.call('RPUSH', KEYS[1], string.sub(member, tab + 1)) end
end
local task = redis.call('LPOP', KEYS[1])
if task then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3] .. '\t' .. task)
end
local next = -1
if redis.call('LLEN', KEYS[1]) > 0 then
  next = now
else
  local t = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local l = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #t > 0 then next = tonumber(t[2]) end
  if #l > 0 and (next < 0 or tonumber(l[2]) < next) then next = tonumber(l[2]) end
end
return { task or false, next }
