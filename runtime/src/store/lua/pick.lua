-- Picks the tenant whose work is due first and holds it for a while (its score moves HOLD ms ahead) instead
-- of taking it out of the rotation: a worker that dies or loses its connection before settling leaves the
-- tenant to come back on its own. Announcements from now on are collected for `settle`.
-- KEYS: the rotation (zset), the announced due times (hash). ARGV: now_ms, hold_ms.
-- Returns { tenant or false, held score, or the first due time (or -1) when nothing is due }.
local now = tonumber(ARGV[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return { false, -1 } end
local due = tonumber(first[2])
if due > now then return { false, due } end
local held = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', held, first[1])
redis.call('HDEL', KEYS[2], first[1])
return { first[1], held }
