-- Stores a new version of a pipeline unless its text and origin equal the latest version's.
-- KEYS: heads (hash name -> latest live version), counters (hash name -> last version ever), the
-- pipeline's versions (hash version -> doc), the pipeline's latest "hash<TAB>origin" (string).
-- ARGV: name, "hash<TAB>origin", doc. Returns { 1, version } stored, { 0, version } unchanged.
local live = redis.call('HGET', KEYS[1], ARGV[1])
if live and redis.call('GET', KEYS[4]) == ARGV[2] then
  return { 0, tonumber(live) }
end
local v = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[3], v, ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], v)
redis.call('SET', KEYS[4], ARGV[2])
return { 1, v }
