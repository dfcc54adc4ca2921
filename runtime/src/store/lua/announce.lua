-- Puts a tenant in the rotation at the time its next work is due, waking idle workers only when that time
-- moved earlier (a busy tenant announces without a message to every worker), and records the tenant for
-- housekeeping. It also keeps the earliest due time announced since the tenant was last picked, for
-- `settle`. KEYS: the rotation (zset), the tenants (set), the announced due times (hash).
-- ARGV: due_ms, tenant, wake channel.
redis.call('SADD', KEYS[2], ARGV[2])
local known = redis.call('HGET', KEYS[3], ARGV[2])
if not known or tonumber(ARGV[1]) < tonumber(known) then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
end
if redis.call('ZADD', KEYS[1], 'LT', 'CH', ARGV[1], ARGV[2]) == 1 then
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return 1
