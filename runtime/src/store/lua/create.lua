-- Stores a new run and enqueues its first tasks, unless its de-duplication key is held or the tenant is at
-- its limit of runs in flight. KEYS: ready, run (hash), enqueued (set), runs index (zset, run ids by
-- lexical order = start time), live runs (set), de-duplication key (string).
-- ARGV: status, header, plan, pipeline, run id, dedup ttl ms (0: none), max in flight (0: none), the run key
-- prefix (prefix .. id is a run's hash), the oldest run id to keep in the index, then the tasks.
-- Returns { 1, id } stored, { 2, first run id } duplicate, { 3, '' } at the limit.
local id = ARGV[5]
-- A retried create of a run that was stored (its reply lost): nothing to do again.
if redis.call('EXISTS', KEYS[2]) == 1 then return { 1, id } end
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  local first = redis.call('GET', KEYS[6])
  if first then
    if first == id then return { 1, id } end -- a retried create of this very run
    return { 2, first }
  end
end
local max = tonumber(ARGV[7])
if max > 0 then
  if redis.call('SCARD', KEYS[5]) >= max then
    -- Forget runs that finished (or expired) since they were counted, then count again.
    for _, r in ipairs(redis.call('SMEMBERS', KEYS[5])) do
      local s = redis.call('HGET', ARGV[8] .. r, 'status')
      if (not s) or s == 'succeeded' or s == 'failed' or s == 'cancelled' then
        redis.call('SREM', KEYS[5], r)
      end
    end
    if redis.call('SCARD', KEYS[5]) >= max then return { 3, '' } end
  end
  redis.call('SADD', KEYS[5], id)
end
if ttl > 0 then redis.call('SET', KEYS[6], id, 'PX', ttl) end
redis.call('HSET', KEYS[2], 'status', ARGV[1], 'header', ARGV[2], 'plan', ARGV[3], 'pipeline', ARGV[4])
redis.call('ZADD', KEYS[4], 0, id)
redis.call('ZREMRANGEBYLEX', KEYS[4], '-', '(' .. ARGV[9])
for i = 10, #ARGV do
  if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i])
  end
end
return { 1, id }
