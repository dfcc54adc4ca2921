-- A page of a tenant's runs, newest first. KEYS: runs index (zset). ARGV: run key prefix, cursor ('' = from
-- the newest; else the last id of the previous page), limit, pipeline filter ('' = any), status filter.
-- Looks at most 20 x limit entries; index entries whose run expired are removed on the way.
-- Returns { next cursor or '', status1, header1, status2, header2, ... }.
local prefix, limit, want_pipeline, want_status = ARGV[1], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local max = '+'
if ARGV[2] ~= '' then max = '(' .. ARGV[2] end
local out = { '' }
local found, looked, cursor = 0, 0, nil
while found < limit and looked < 20 * limit do
  local ids = redis.call('ZRANGE', KEYS[1], max, '-', 'BYLEX', 'REV', 'LIMIT', 0, limit)
  if #ids == 0 then return out end
  for _, id in ipairs(ids) do
    looked = looked + 1
    cursor = id
    local f = redis.call('HMGET', prefix .. id, 'status', 'header', 'pipeline')
    if not f[1] then
      redis.call('ZREM', KEYS[1], id)
    elseif (want_pipeline == '' or f[3] == want_pipeline) and (want_status == '' or f[1] == want_status) then
      out[#out + 1] = f[1]
      out[#out + 1] = f[2]
      found = found + 1
      if found == limit then break end
    end
  end
  max = '(' .. cursor
end
-- Is there anything older than the cursor?
if #redis.call('ZRANGE', KEYS[1], '(' .. cursor, '-', 'BYLEX', 'REV', 'LIMIT', 0, 1) > 0 then
  out[1] = cursor
end
return out
