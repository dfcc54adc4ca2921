-- Extends leases still held by this worker. KEYS: inflight. ARGV: lease_until, then members "worker\ttask".
-- Returns how many were still held (a lease that expired and went to another worker is not taken back).
local held = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
    held = held + 1
  end
end
return held
