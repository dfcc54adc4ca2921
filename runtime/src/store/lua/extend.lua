-- Extends leases still held by this worker. KEYS: inflight. ARGV: lease_until, then members "worker\ttask".
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
end
return 1
