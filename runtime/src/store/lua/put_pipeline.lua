-- Stores a new version of a pipeline unless its text and origin equal the latest version's, and claims its
-- webhook paths (a path belongs to one pipeline of the tenant).
-- KEYS: heads (hash name -> latest live version), counters (hash name -> last version ever), the
-- pipeline's versions (hash version -> doc), the pipeline's latest "hash<TAB>origin" (string), the tenant's
-- webhook paths (hash path -> pipeline name).
-- ARGV: name, "hash<TAB>origin", doc, versions to keep, refuse-managed ('1' or '0'), then the pipeline's
-- webhook paths.
-- Returns { 1, version } stored, { 0, version } unchanged, { 2, path, owner } a path is another pipeline's,
-- { 3, version } managed by sluice sync (refused).
local name = ARGV[1]
local live0 = redis.call('HGET', KEYS[1], name)
if ARGV[5] == '1' and live0 then
  local mark = redis.call('GET', KEYS[4]) or ''
  if string.sub(mark, -5) == '\tsync' then return { 3, tonumber(live0) } end
end
for i = 6, #ARGV do
  local owner = redis.call('HGET', KEYS[5], ARGV[i])
  if owner and owner ~= name then return { 2, ARGV[i], owner } end
end
local live = redis.call('HGET', KEYS[1], name)
if live and redis.call('GET', KEYS[4]) == ARGV[2] then
  return { 0, tonumber(live) }
end
-- The paths this pipeline had and no longer has are freed; the new ones are taken.
local all = redis.call('HGETALL', KEYS[5])
for i = 1, #all, 2 do
  if all[i + 1] == name then redis.call('HDEL', KEYS[5], all[i]) end
end
for i = 6, #ARGV do redis.call('HSET', KEYS[5], ARGV[i], name) end
local v = redis.call('HINCRBY', KEYS[2], name, 1)
redis.call('HSET', KEYS[3], v, ARGV[3])
redis.call('HDEL', KEYS[3], v - tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], name, v)
redis.call('SET', KEYS[4], ARGV[2])
return { 1, v }
