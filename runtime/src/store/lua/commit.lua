-- Applies one change of a run atomically. KEYS: ready, timers, inflight, run (hash), states (hash),
-- terminal (set), enqueued (set), items (set "step#i"), item counts (hash), dead letters (hash), dead letter
-- index (zset). ARGV[1]: the change as JSON; ARGV[2]: how long a finished run is kept (ms); ARGV[3]: how long
-- a dead letter is kept (ms).
-- Returns { items_done, run_written, pushed, chained task or false, stale }: `pushed` counts tasks put on the
-- ready list or the timers (the caller then wakes workers); a chained task went straight to the committing
-- worker; `stale` is 1 when the claim was no longer held and nothing was applied; `load` is what the chained
-- task reads: { status, header, state documents... }, or false.
local c = cjson.decode(ARGV[1])
local now = tonumber(c.now)
local pushed = 0
local chained = false
-- Fencing: a commit that releases a claim applies only while this worker still holds it (a lease that
-- expired and went to another worker makes this commit stale; nothing of it is applied).
if c.release and redis.call('ZREM', KEYS[3], c.release) == 0 then
  return { 0, 0, 0, false, 1, false }
end
-- A replay applies once: the dead letter it consumes must still be there (two replays at once run once).
if c.remove_dead_letter then
  if redis.call('HDEL', KEYS[10], c.remove_dead_letter) == 0 then
    return { 0, 0, 0, false, 1, false }
  end
  redis.call('ZREM', KEYS[11], c.remove_dead_letter)
end
local function push_once(task)
  if redis.call('SADD', KEYS[7], task) == 1 then
    if c.chain and not chained then
      -- The committing worker runs this task next, under a lease, without a trip through the ready list.
      chained = task
      redis.call('ZADD', KEYS[3], c.chain[2], c.chain[1] .. '\t' .. task)
    else
      redis.call('RPUSH', KEYS[1], task)
      pushed = pushed + 1
    end
  end
end
for _, t in ipairs(c.forget or {}) do
  redis.call('SREM', KEYS[7], t)
end
for _, r in ipairs(c.reopen or {}) do
  -- r = { task, step, index or -1 }
  if tonumber(r[3]) < 0 then
    redis.call('SREM', KEYS[6], r[2])
  elseif redis.call('SREM', KEYS[8], r[2] .. '#' .. r[3]) == 1 then
    redis.call('HINCRBY', KEYS[9], r[2], -1)
  end
  redis.call('SREM', KEYS[7], r[1])
  -- Copies still waiting (a retry timer, the ready list) go: the task is enqueued afresh if at all.
  redis.call('ZREM', KEYS[2], r[1])
  redis.call('LREM', KEYS[1], 0, r[1])
end
if c.states and #c.states > 0 then
  -- In chunks: Lua's unpack takes a few thousand values at most (a replay may write thousands of items).
  local args = {}
  for _, kv in ipairs(c.states) do
    if not (c.guarded and redis.call('SISMEMBER', KEYS[6], kv[1]) == 1) then
      args[#args + 1] = kv[1]
      args[#args + 1] = kv[2]
      if #args >= 1000 then
        redis.call('HSET', KEYS[5], unpack(args))
        args = {}
      end
    end
  end
  if #args > 0 then redis.call('HSET', KEYS[5], unpack(args)) end
end
if c.terminal and #c.terminal > 0 then
  redis.call('SADD', KEYS[6], unpack(c.terminal))
end
for _, kv in ipairs(c.close or {}) do
  if redis.call('SADD', KEYS[6], kv[1]) == 1 then
    redis.call('HSET', KEYS[5], kv[1], kv[2])
  end
end
local items_done = 0
if c.item_done then
  local member = c.item_done[1] .. '#' .. c.item_done[2]
  if redis.call('SADD', KEYS[8], member) == 1 then
    items_done = redis.call('HINCRBY', KEYS[9], c.item_done[1], 1)
  else
    items_done = tonumber(redis.call('HGET', KEYS[9], c.item_done[1]) or '0')
  end
end
local function push_again(task)
  if c.chain and not chained then
    chained = task
    redis.call('ZADD', KEYS[3], c.chain[2], c.chain[1] .. '\t' .. task)
  else
    redis.call('RPUSH', KEYS[1], task)
    pushed = pushed + 1
  end
end
if c.finalize and items_done >= tonumber(c.finalize[1]) then
  push_again(c.finalize[2])
end
for _, cand in ipairs(c.candidates or {}) do
  -- cand = { task, deps still to check }: deps this commit finished are left out by the caller.
  local deps = cand[2]
  local all = true
  if #deps > 0 then
    local present = redis.call('SMISMEMBER', KEYS[6], unpack(deps))
    for _, p in ipairs(present) do
      if p == 0 then all = false break end
    end
  end
  if all then push_once(cand[1]) end
end
for _, task in ipairs(c.enqueue or {}) do push_once(task) end
if c.schedule then
  local at = tonumber(c.schedule[2])
  if at <= now then
    redis.call('RPUSH', KEYS[1], c.schedule[1])
  else
    redis.call('ZADD', KEYS[2], at, c.schedule[1])
  end
  pushed = pushed + 1
end
local written = 0
if c.run then
  if redis.call('HGET', KEYS[4], 'status') == c.run[1] then
    redis.call('HSET', KEYS[4], 'status', c.run[2], 'header', c.run[3])
    written = 1
  end
end
if c.finish and written == 0 then
  -- c.finish = { main step ids, header }: the run succeeds when this commit made the last main step terminal.
  local all = true
  for _, p in ipairs(redis.call('SMISMEMBER', KEYS[6], unpack(c.finish[1]))) do
    if p == 0 then all = false break end
  end
  if all and redis.call('HGET', KEYS[4], 'status') == 'running' then
    redis.call('HSET', KEYS[4], 'status', 'succeeded', 'header', c.finish[2])
    written = 1
  end
end
if written == 1 then
  -- A finished run is kept for the retention period, then Redis deletes it with its outputs; a run that
  -- goes back to running (a replay) is kept again.
  local status = c.run and c.run[2] or 'succeeded'
  for i = 4, 9 do
    if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
    else
      redis.call('PERSIST', KEYS[i])
    end
  end
end
if c.dead_letter then
  redis.call('HSET', KEYS[10], c.dead_letter[1], c.dead_letter[3])
  redis.call('ZADD', KEYS[11], c.dead_letter[2], c.dead_letter[1])
  -- Dead letters older than their keeping period go as new ones arrive.
  local old = redis.call('ZRANGEBYSCORE', KEYS[11], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('HDEL', KEYS[10], unpack(old))
    redis.call('ZREM', KEYS[11], unpack(old))
  end
end
-- The chained task's reads (as `load` does), after every write of this commit: it runs next, here.
local load = false
if chained then
  for _, cl in ipairs(c.chain_loads or {}) do
    if cl[1] == chained then
      local status = redis.call('HGET', KEYS[4], 'status')
      if status == 'queued' then
        redis.call('HSET', KEYS[4], 'status', 'running')
        status = 'running'
      end
      load = { status or false, redis.call('HGET', KEYS[4], 'header') or false }
      local docs = redis.call('HMGET', KEYS[5], unpack(cl[2]))
      for i = 1, #cl[2] do load[#load + 1] = docs[i] or false end
      break
    end
  end
end
return { items_done, written, pushed, chained, 0, load }
