-- When a tenant next has work: now if tasks are ready, else its first timer or lease expiry; -1 when none.
-- KEYS: ready (list), timers (zset), inflight (zset). ARGV: now_ms. Used by housekeeping to put tenants back
-- in the rotation that a crash between a commit and its announcement left out.
if redis.call('LLEN', KEYS[1]) > 0 then return tonumber(ARGV[1]) end
local next = -1
local t = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local l = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #t > 0 then next = tonumber(t[2]) end
if #l > 0 and (next < 0 or tonumber(l[2]) < next) then next = tonumber(l[2]) end
return next
