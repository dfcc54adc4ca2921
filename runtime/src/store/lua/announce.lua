-- Puts a tenant in the rotation at the time its next work is due, waking idle workers only when that time
-- moved earlier (a busy tenant announces without a message to every worker), and records the tenant for
-- housekeeping. KEYS: the rotation (zset), the tenants (set). ARGV: due_ms, tenant, wake channel.
redis.call('SADD', KEYS[2], ARGV[2])
if redis.call('ZADD', KEYS[1], 'LT', 'CH', ARGV[1], ARGV[2]) == 1 then
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return 1
