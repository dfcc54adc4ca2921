-- Reads what a claimed task needs in one round trip, and marks a queued run running (its first step started).
-- KEYS: run (hash), states (hash). ARGV: the state keys to read.
-- Returns { status or false, header or false, state documents... }.
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running')
  status = 'running'
end
local out = { status or false, redis.call('HGET', KEYS[1], 'header') or false }
if #ARGV > 0 then
  local docs = redis.call('HMGET', KEYS[2], unpack(ARGV))
  for i = 1, #ARGV do out[#out + 1] = docs[i] or false end
end
return out
