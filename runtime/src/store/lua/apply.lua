-- Applies many pipeline changes of one tenant at once, or none (sluice sync).
-- KEYS: heads, counters, hook paths, then per op: its versions hash and its latest-mark key.
-- ARGV: versions kept, #expected, then per expected: name, version ('' = absent); then #ops, then per op:
-- kind ('put' | 'del'), name, mark, doc, #paths, paths...
-- Returns { 'done', name1, code1, version1, ... } (code 1 created, 0 unchanged, -1 deleted),
-- { 'moved', name, found or '' }, or { 'path', name, path, owner }.
local keep = tonumber(ARGV[1])
local i = 2
local n_expected = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_expected do
  local name, want = ARGV[i], ARGV[i + 1]; i = i + 2
  local now = redis.call('HGET', KEYS[1], name) or ''
  if now ~= want then return { 'moved', name, now } end
end
local n_ops = tonumber(ARGV[i]); i = i + 1
local ops = {}
for k = 1, n_ops do
  local op = { kind = ARGV[i], name = ARGV[i + 1], mark = ARGV[i + 2], doc = ARGV[i + 3], paths = {},
               versions = KEYS[3 + 2 * k - 1], latest = KEYS[3 + 2 * k] }
  local n_paths = tonumber(ARGV[i + 4]); i = i + 5
  for _ = 1, n_paths do table.insert(op.paths, ARGV[i]); i = i + 1 end
  table.insert(ops, op)
end
-- Check the paths against what they will be after the deletes, before writing anything.
local owners = {}
local all = redis.call('HGETALL', KEYS[3])
for k = 1, #all, 2 do owners[all[k]] = all[k + 1] end
for _, op in ipairs(ops) do
  if op.kind == 'del' then
    for p, o in pairs(owners) do if o == op.name then owners[p] = nil end end
  end
end
for _, op in ipairs(ops) do
  if op.kind == 'put' then
    for p, o in pairs(owners) do if o == op.name then owners[p] = nil end end
  end
end
for _, op in ipairs(ops) do
  if op.kind == 'put' then
    for _, p in ipairs(op.paths) do
      if owners[p] and owners[p] ~= op.name then return { 'path', op.name, p, owners[p] } end
      owners[p] = op.name
    end
  end
end
local out = { 'done' }
for _, op in ipairs(ops) do
  if op.kind == 'del' then
    redis.call('HDEL', KEYS[1], op.name)
    redis.call('DEL', op.versions, op.latest)
    for k = 1, #all, 2 do if all[k + 1] == op.name then redis.call('HDEL', KEYS[3], all[k]) end end
    table.insert(out, op.name); table.insert(out, -1); table.insert(out, 0)
  end
end
for _, op in ipairs(ops) do
  if op.kind == 'put' then
    local live = redis.call('HGET', KEYS[1], op.name)
    if live and redis.call('GET', op.latest) == op.mark then
      table.insert(out, op.name); table.insert(out, 0); table.insert(out, tonumber(live))
    else
      local cur = redis.call('HGETALL', KEYS[3])
      for k = 1, #cur, 2 do if cur[k + 1] == op.name then redis.call('HDEL', KEYS[3], cur[k]) end end
      for _, p in ipairs(op.paths) do redis.call('HSET', KEYS[3], p, op.name) end
      local v = redis.call('HINCRBY', KEYS[2], op.name, 1)
      redis.call('HSET', op.versions, v, op.doc)
      redis.call('HDEL', op.versions, v - keep)
      redis.call('HSET', KEYS[1], op.name, v)
      redis.call('SET', op.latest, op.mark)
      table.insert(out, op.name); table.insert(out, 1); table.insert(out, v)
    end
  end
end
return out
