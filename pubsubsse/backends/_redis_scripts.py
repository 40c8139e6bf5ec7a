"""The Lua scripts of the Redis transport: the steps that must be atomic on the server.

Every key a script names or builds (``:wake``, ``:wants:<topic>``, ``:held:<process>`` after the
log's key) starts with the log's key, so on a Redis Cluster they share its hash tag and each
script runs within one slot.
"""

__all__ = ["APPEND", "REPLACE", "TRIM", "FORGET_HOLDS", "IF_OWNER_SET", "IF_OWNER_DELETE"]

#: Append a batch: the epoch and the deadline checked on Redis's clock, the batch whole or not at
#: all, then the wake-ups (``ARGV``: epoch, deadline ms, not-before ms, the writer's process,
#: the count of wake tags and the tags, then each entry as its field count and fields).
APPEND = """
local epoch = redis.call('GET', KEYS[2])
if not epoch or (ARGV[1] ~= '*' and epoch ~= ARGV[1]) then return {'stale'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[2]) then return {'expired'} end
if now <= tonumber(ARGV[3]) then return {'early'} end
local own, tags = ARGV[4], tonumber(ARGV[5])
local ids = {}
local i = 6 + tags
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local args = {'XADD', KEYS[1], '*'}
  for j = 1, 2 * n do args[#args + 1] = ARGV[i + j] end
  ids[#ids + 1] = redis.call(unpack(args))
  i = i + 1 + 2 * n
end
-- Wake the readers that want these entries: every one for a change ('' tag), otherwise the
-- processes holding streams of the topics published to, and the writer (it waits for its own).
if tags > 0 and ARGV[6] == '' then
  redis.call('SPUBLISH', KEYS[1] .. ':wake', '1')
  return ids
end
local woken = {}
if own ~= '' then woken[own] = true end
for j = 6, 5 + tags do
  for _, p in ipairs(redis.call('SMEMBERS', KEYS[1] .. ':wants:' .. ARGV[j])) do woken[p] = true end
end
for p in pairs(woken) do redis.call('SPUBLISH', KEYS[1] .. ':wake:' .. p, '1') end
return ids
"""

#: If the epoch is still the one given: store the snapshot, empty the log, set the new epoch.
REPLACE = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

#: Trim the entries every live process has applied. The reports are read in the script: a
#: process whose report lands before the trim is never trimmed past. XTRIM leaves
#: max-deleted-entry-id alone (only XDEL moves it): the script moves it to the last entry it
#: removes, so that a process that looked dead can tell that entries after its position are gone.
TRIM = """
local function parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local minid = ARGV[1]
local mms, mseq = parts(minid)
local reports = redis.call('HGETALL', KEYS[2])
for i = 2, #reports, 2 do
  local id, wall = string.match(reports[i], '^(%d+%-%d+) (%S+)$')
  if id and tonumber(wall) and tonumber(wall) > tonumber(ARGV[2]) then
    local ms, seq = parts(id)
    if ms < mms or (ms == mms and seq < mseq) then minid, mms, mseq = id, ms, seq end
  end
end
if minid == '0-0' then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '(' .. minid, '-', 'COUNT', 1)[1]
if not last or redis.call('XTRIM', KEYS[1], 'MINID', minid) == 0 then return 0 end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local top, deleted
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then top = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
local lms, lseq = parts(last[1])
local dms, dseq = parts(deleted)
if lms > dms or (lms == dms and lseq > dseq) then
  redis.call('XSETID', KEYS[1], top, 'MAXDELETEDID', last[1])
end
return 1
"""

#: Remove the processes in ``ARGV`` from the topics they held streams of.
FORGET_HOLDS = """
for _, token in ipairs(ARGV) do
  local held = KEYS[1] .. ':held:' .. token
  for _, topic in ipairs(redis.call('SMEMBERS', held)) do redis.call('SREM', KEYS[1] .. ':wants:' .. topic, token) end
  redis.call('DEL', held)
end
return 1
"""

#: Set ``KEYS[2]`` if the lock ``KEYS[1]`` is held by ``ARGV[1]`` (the snapshot, by its lock's owner).
IF_OWNER_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2]) return 1 end
return 0
"""

#: Release the lock ``KEYS[1]`` if ``ARGV[1]`` holds it.
IF_OWNER_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
