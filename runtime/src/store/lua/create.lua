-- Stores a new run and enqueues its first tasks. KEYS: ready, run (hash), enqueued (set).
-- ARGV: status, header, plan, then the tasks.
redis.call('HSET', KEYS[2], 'status', ARGV[1], 'header', ARGV[2], 'plan', ARGV[3])
for i = 4, #ARGV do
  if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i])
  end
end
return 1
