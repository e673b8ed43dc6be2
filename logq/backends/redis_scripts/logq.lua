-- logq on Redis: every job transition is one of the scripts below, run atomically by the server.
--
-- The file is a prelude (shared helpers) followed by one section per operation, each started
-- by a line "-- @op NAME". The backend (logq/backends/redis.py) makes one script of the prelude
-- and each section, loads it once and calls it by its hash (EVALSHA).
--
-- Keys. KEYS[1] is the queue's counter, "{logq:NAME}:seq"; every other key is the same prefix
-- (so one hash slot: the queue runs on Redis Cluster) followed by:
--   seq        record sequence numbers; a job's id is the number of its ENQUEUE record
--   j:ID       the job (hash): e ENQUEUE record, n name, p priority, m max_attempts, a attempts,
--              s state, r run_at, x lease expiry, k key, b backoff, err, res, f finished_at, l last seq
--   h:ID       the job's history: its later records (type byte, sequence number u64, payload as in the log)
--   r:NAME     ready jobs of a task name (zset: score -priority, member run_at .. id, fixed width)
--   rn         the task names with ready jobs (set)
--   d          delayed pending jobs (zset by run_at); a  active jobs (zset by lease expiry)
--   st:STATE   the jobs in each state (zset by id); fin  final jobs (zset by when they are swept)
--   keys       unique key -> the ids of the live jobs holding it, ascending, space separated
--   wake       list pushed on every change that can make a job leasable (idle leases BLPOP it)
--   watch      job id -> number of clients in `wait` for it; channel "done" tells them
-- Times (now) come from the client's clock, as the local backend's do.

local P = string.sub(KEYS[1], 1, -4)
local ENQUEUE, LEASE, ACK, FAIL, RELEASE, EXTEND, CANCEL, RETRY, EXPIRE = 16, 17, 18, 19, 20, 21, 22, 23, 24
local TYPE_NAMES = {[17] = 'lease', [18] = 'ack', [19] = 'fail', [20] = 'release', [21] = 'extend',
                    [22] = 'cancel', [23] = 'retry', [24] = 'expire'}

local function jk(id) return P .. 'j:' .. id end

local function record(id, rtype, data)
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('RPUSH', P .. 'h:' .. id, string.char(rtype) .. struct.pack('<I8', seq) .. data)
  redis.call('HSET', jk(id), 'l', seq)
  return seq
end

-- the hot paths (lease, complete) number their records themselves and set the job's fields
-- in one HSET: these two do the rest of `record` and `set_state`
local function push_record(id, rtype, seq, data)
  redis.call('RPUSH', P .. 'h:' .. id, string.char(rtype) .. struct.pack('<I8', seq) .. data)
end

local function move_state(id, old, new)
  redis.call('ZREM', P .. 'st:' .. old, id)
  redis.call('ZADD', P .. 'st:' .. new, id, id)
end

local function ready_member(run_at, id)
  return string.format('%021.6f%016d', run_at, id)
end

local function set_state(id, old, new)
  if old then redis.call('ZREM', P .. 'st:' .. old, id) end
  redis.call('ZADD', P .. 'st:' .. new, id, id)
  redis.call('HSET', jk(id), 's', new)
end

local function wake()
  redis.call('LPUSH', P .. 'wake', '1')
  redis.call('LTRIM', P .. 'wake', 0, 63)
end

-- make job `id` pending at run_at (ready or delayed)
local function make_pending(id, name, prio, run_at, now)
  redis.call('HSET', jk(id), 'r', run_at)
  if run_at <= now then
    redis.call('ZADD', P .. 'r:' .. name, -prio, ready_member(run_at, id))
    redis.call('SADD', P .. 'rn', name)
  else
    redis.call('ZADD', P .. 'd', run_at, id)
  end
end

local function key_holders(key)
  local v = redis.call('HGET', P .. 'keys', key)
  local out = {}
  if v then for s in string.gmatch(v, '%d+') do out[#out + 1] = tonumber(s) end end
  return out
end

local function set_holders(key, ids)
  if #ids == 0 then redis.call('HDEL', P .. 'keys', key)
  else
    table.sort(ids)
    local parts = {}
    for i, v in ipairs(ids) do parts[i] = string.format('%d', v) end
    redis.call('HSET', P .. 'keys', key, table.concat(parts, ' '))
  end
end

local function hold_key(key, id)
  if not key or key == '' then return end
  local ids = key_holders(key)
  for _, v in ipairs(ids) do if v == id then return end end
  ids[#ids + 1] = id
  set_holders(key, ids)
end

local function drop_key(key, id)
  if not key or key == '' then return end
  local ids, kept = key_holders(key), {}
  for _, v in ipairs(ids) do if v ~= id then kept[#kept + 1] = v end end
  set_holders(key, kept)
end

-- a job became final: free its key, schedule its sweep, tell `wait` callers
local function finished(id, key, now, keep)
  drop_key(key, id)
  redis.call('HSET', jk(id), 'f', now)
  redis.call('ZADD', P .. 'fin', now + keep, id)
  if redis.call('HEXISTS', P .. 'watch', id) == 1 then
    redis.call('PUBLISH', P .. 'done', id)
  end
end

-- the job's fields for a check: state, attempts, or nil if there is no such job
local function look(id)
  local f = redis.call('HMGET', jk(id), 's', 'a')
  if not f[1] then return nil end
  return f[1], tonumber(f[2])
end

-- nil if `rtype` may change job `id` (fenced by `attempt` unless it is -1), else an error reply
local function check(id, rtype, attempt, allowed)
  local state, attempts = look(id)
  if not state then return {'notfound', id} end
  if attempt >= 0 and (state ~= 'active' or attempts ~= attempt) then
    return {'leaselost', id, attempt, state, attempts, TYPE_NAMES[rtype]}
  end
  if state ~= allowed then return {'invalid', id, state, TYPE_NAMES[rtype], allowed} end
  return nil
end

-- expire leases that ended at or before now (pending again due now, or dead): returns the count
local function expire_leases(now, retain_dead)
  local ids = redis.call('ZRANGEBYSCORE', P .. 'a', '-inf', now)
  for _, sid in ipairs(ids) do
    local id = tonumber(sid)
    local f = redis.call('HMGET', jk(id), 'a', 'm', 'n', 'p', 'k')
    local attempts, max = tonumber(f[1]), tonumber(f[2])
    local dead = attempts >= max
    redis.call('ZREM', P .. 'a', id)
    redis.call('HSET', jk(id), 'err', 'lease expired', 'x', '')
    record(id, EXPIRE, struct.pack('<I8dBd', id, now, dead and 1 or 0, now) .. 'lease expired')
    if dead then
      set_state(id, 'active', 'dead')
      finished(id, f[5], now, retain_dead)
    else
      set_state(id, 'active', 'pending')
      make_pending(id, f[3], tonumber(f[4]), now, now)
    end
  end
  if #ids > 0 then wake() end
  return #ids
end

local function promote(now)
  local ids = redis.call('ZRANGEBYSCORE', P .. 'd', '-inf', now)
  for _, sid in ipairs(ids) do
    local f = redis.call('HMGET', jk(sid), 'n', 'p', 'r')
    redis.call('ZADD', P .. 'r:' .. f[1], -tonumber(f[2]), ready_member(tonumber(f[3]), tonumber(sid)))
    redis.call('SADD', P .. 'rn', f[1])
  end
  if #ids > 0 then redis.call('ZREMRANGEBYSCORE', P .. 'd', '-inf', now) end
end

-- remove up to `limit` final jobs whose retention has passed
local function sweep(now, limit)
  local ids = redis.call('ZRANGEBYSCORE', P .. 'fin', '-inf', now, 'LIMIT', 0, limit)
  for _, sid in ipairs(ids) do
    local s = redis.call('HGET', jk(sid), 's')
    if s then redis.call('ZREM', P .. 'st:' .. s, sid) end
    redis.call('DEL', jk(sid), P .. 'h:' .. sid)
    redis.call('ZREM', P .. 'fin', sid)
  end
  return #ids
end

-- the earliest time a delayed job becomes due or a lease ends ('' if none)
local function next_wakeup()
  local t = nil
  for _, z in ipairs({P .. 'd', P .. 'a'}) do
    local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    if first[2] and (t == nil or tonumber(first[2]) < t) then t = tonumber(first[2]) end
  end
  return t and string.format('%.17g', t) or ''
end

-- @op enqueue
-- ARGV: now, run_at, priority, max_attempts, count, then per job: name, key, backoff, record
local now, run_at, prio, max, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
if count == 1 and ARGV[7] ~= '' then
  local holders = key_holders(ARGV[7])
  if #holders > 0 then return {0, holders[1]} end
end
local last = redis.call('INCRBY', P .. 'seq', count)
local first = last - count + 1
for i = 0, count - 1 do
  local name, key, backoff, rec = ARGV[6 + 4 * i], ARGV[7 + 4 * i], ARGV[8 + 4 * i], ARGV[9 + 4 * i]
  local id = first + i
  redis.call('HSET', jk(id), 'e', rec, 'n', name, 'p', prio, 'm', max, 'a', 0, 'k', key, 'b', backoff, 'l', id)
  set_state(id, nil, 'pending')
  make_pending(id, name, prio, run_at, now)
  hold_key(key, id)
end
wake()
return {1, first}

-- @op lease
-- ARGV: now, lease_time, n, retain_dead, any (1: every name), then the task names
local now, lease_time, n, retain_dead = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
expire_leases(now, retain_dead)
promote(now)
sweep(now, 20)
local names = {}
if ARGV[5] == '1' then names = redis.call('SMEMBERS', P .. 'rn')
else for i = 6, #ARGV do names[#names + 1] = ARGV[i] end end
local cands = {}
for _, name in ipairs(names) do
  local got = redis.call('ZRANGE', P .. 'r:' .. name, 0, n - 1, 'WITHSCORES')
  for i = 1, #got, 2 do cands[#cands + 1] = {tonumber(got[i + 1]), got[i], name} end
end
if #cands == 0 then return {0, next_wakeup()} end
table.sort(cands, function(x, y)
  if x[1] ~= y[1] then return x[1] < y[1] end
  return x[2] < y[2]
end)
local expires = now + lease_time
local out = {1, string.format('%.17g', expires)}
local take = math.min(n, #cands)
local seq = redis.call('INCRBY', P .. 'seq', take) - take  -- the batch's LEASE records, in order
local emptied = {}
for i = 1, take do
  local c = cands[i]
  local id = tonumber(string.sub(c[2], 22))
  redis.call('ZREM', P .. 'r:' .. c[3], c[2])
  emptied[c[3]] = true
  local f = redis.call('HMGET', jk(id), 'n', 'e', 'p', 'm', 'a')
  local attempts = tonumber(f[5]) + 1
  seq = seq + 1
  redis.call('HSET', jk(id), 'a', attempts, 'x', expires, 's', 'active', 'l', seq)
  move_state(id, 'pending', 'active')
  redis.call('ZADD', P .. 'a', expires, id)
  push_record(id, LEASE, seq, struct.pack('<I8I4dd', id, attempts, now, expires))
  out[#out + 1] = id
  out[#out + 1] = f[1]
  out[#out + 1] = f[2]
  out[#out + 1] = attempts
  out[#out + 1] = f[3]
  out[#out + 1] = f[4]
end
for name in pairs(emptied) do
  if redis.call('EXISTS', P .. 'r:' .. name) == 0 then redis.call('SREM', P .. 'rn', name) end
end
return out

-- @op expire
-- ARGV: now, retain_dead
return expire_leases(tonumber(ARGV[1]), tonumber(ARGV[2]))

-- @op complete
-- Ack or fail leased jobs, each fenced by its attempt; one reply per outcome ({'ok'} or an
-- error), and, all or none (ARGV[3] == '1': ack_many), nothing written if any is refused.
-- ARGV: now, count, all_or_none, retain_done, retain_dead, then per outcome 9 fields:
--   id, attempt (-1: the current lease), kind ('a' ack, 'f' fail), result or error text,
--   dead ('1'/'0', fail), run_at (fail), next run's record ('' if none), its name, its key
local now, count, strict = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local retain_done, retain_dead = tonumber(ARGV[4]), tonumber(ARGV[5])
local replies, seen, ok, fields = {}, {}, {}, {}
for i = 0, count - 1 do
  local b = 6 + 9 * i
  local id, attempt, kind = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), ARGV[b + 2]
  local what = (kind == 'a') and 'ack' or 'fail'
  local err
  local f = redis.call('HMGET', jk(id), 's', 'a', 'n', 'p', 'k')
  if seen[id] then err = {'twice', id}
  elseif not f[1] then err = {'notfound', id}
  elseif attempt >= 0 and (f[1] ~= 'active' or tonumber(f[2]) ~= attempt) then
    err = {'leaselost', id, attempt, f[1], tonumber(f[2]), what}
  elseif f[1] ~= 'active' then err = {'invalid', id, f[1], what, 'active'} end
  if err then
    if strict then return {err} end
    replies[i + 1] = err
  else
    seen[id] = true
    replies[i + 1] = {'ok'}
    ok[#ok + 1] = b
    fields[b] = f
  end
end
local woke = false
for _, b in ipairs(ok) do
  local id, kind, text = tonumber(ARGV[b]), ARGV[b + 2], ARGV[b + 3]
  local got = fields[b]
  local f = {got[3], got[4], got[5]}  -- name, priority, key
  redis.call('ZREM', P .. 'a', id)
  local seq = redis.call('INCR', P .. 'seq')
  local final = true
  if kind == 'a' then
    push_record(id, ACK, seq, struct.pack('<I8d', id, now) .. text)
    redis.call('HSET', jk(id), 'x', '', 'res', text, 's', 'done', 'l', seq)
    move_state(id, 'active', 'done')
  else
    local dead, run_at = ARGV[b + 4] == '1', tonumber(ARGV[b + 5])
    push_record(id, FAIL, seq, struct.pack('<I8dBd', id, now, dead and 1 or 0, run_at) .. text)
    redis.call('HSET', jk(id), 'x', '', 'err', text, 's', dead and 'dead' or 'pending', 'l', seq)
    if dead then move_state(id, 'active', 'dead')
    else
      final = false
      move_state(id, 'active', 'pending')
      make_pending(id, f[1], tonumber(f[2]), run_at, now)
      woke = true
    end
  end
  if final then
    local next_rec, next_name, next_key = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
    if next_rec ~= '' then
      local holders = key_holders(next_key)
      if next_key == '' or holders[1] == id then
        local nid = redis.call('INCR', P .. 'seq')
        local hd = struct.unpack('<d', next_rec, 9)
        local np, nm = struct.unpack('<iI4', next_rec, 17)
        redis.call('HSET', jk(nid), 'e', next_rec, 'n', next_name, 'p', np, 'm', nm, 'a', 0, 'k', next_key,
                   'b', '', 'l', nid)
        set_state(nid, nil, 'pending')
        make_pending(nid, next_name, np, hd, now)
        hold_key(next_key, nid)
        woke = true
      end
    end
    finished(id, f[3], now, (kind == 'a') and retain_done or retain_dead)
  end
end
if woke then wake() end
return replies

-- @op change
-- Release, extend, cancel or retry one job. ARGV: now, op, id, attempt, seconds, retain_done
local now, op, id, attempt, seconds = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local rtype = ({release = RELEASE, extend = EXTEND, cancel = CANCEL, retry = RETRY})[op]
local allowed = ({release = 'active', extend = 'active', cancel = 'pending', retry = 'dead'})[op]
local err = check(id, rtype, attempt, allowed)
if err then return {err} end
local f = redis.call('HMGET', jk(id), 'n', 'p', 'k', 'r')
local name, prio = f[1], tonumber(f[2])
if op == 'release' then
  local run_at = now + seconds
  redis.call('ZREM', P .. 'a', id)
  redis.call('HINCRBY', jk(id), 'a', -1)
  redis.call('HSET', jk(id), 'x', '')
  record(id, RELEASE, struct.pack('<I8d', id, run_at))
  set_state(id, 'active', 'pending')
  make_pending(id, name, prio, run_at, now)
  wake()
  return {'ok', ''}
elseif op == 'extend' then
  local expires = now + seconds
  redis.call('ZADD', P .. 'a', expires, id)
  redis.call('HSET', jk(id), 'x', expires)
  record(id, EXTEND, struct.pack('<I8d', id, expires))
  return {'ok', string.format('%.17g', expires)}
elseif op == 'cancel' then
  local run_at = tonumber(f[4])
  redis.call('ZREM', P .. 'd', id)
  redis.call('ZREM', P .. 'r:' .. name, ready_member(run_at, id))
  if redis.call('EXISTS', P .. 'r:' .. name) == 0 then redis.call('SREM', P .. 'rn', name) end
  record(id, CANCEL, struct.pack('<I8d', id, now))
  set_state(id, 'pending', 'cancelled')
  finished(id, f[3], now, tonumber(ARGV[6]))
  return {'ok', ''}
else
  redis.call('ZREM', P .. 'fin', id)
  redis.call('HSET', jk(id), 'a', 0, 'f', '')
  record(id, RETRY, struct.pack('<I8d', id, now))
  set_state(id, 'dead', 'pending')
  make_pending(id, name, prio, now, now)
  hold_key(f[3], id)
  wake()
  return {'ok', ''}
end

-- @op stats
-- ARGV: now. Promotes due jobs first (as a lease would), then counts.
local now = tonumber(ARGV[1])
promote(now)
local counts = {}
for _, s in ipairs({'pending', 'active', 'done', 'dead', 'cancelled'}) do
  counts[#counts + 1] = redis.call('ZCARD', P .. 'st:' .. s)
end
local by_name = {}
for _, name in ipairs(redis.call('SMEMBERS', P .. 'rn')) do
  by_name[#by_name + 1] = name
  by_name[#by_name + 1] = redis.call('ZCARD', P .. 'r:' .. name)
end
local oldest = redis.call('ZRANGE', P .. 'st:pending', 0, 0)
local oldest_rec = ''
if oldest[1] then oldest_rec = redis.call('HGET', jk(oldest[1]), 'e') end
local seq = redis.call('GET', P .. 'seq') or 0
return {counts, by_name, oldest_rec, seq}

-- @op select
-- ARGV: state ('' any), name ('' any), limit (-1 none). Jobs in id order.
local state, name, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
local zset = P .. 'st:' .. state
local sets = {}
if state ~= '' then sets = {zset} else
  for _, s in ipairs({'pending', 'active', 'done', 'dead', 'cancelled'}) do sets[#sets + 1] = P .. 'st:' .. s end
end
local ids = {}
for _, z in ipairs(sets) do
  for _, sid in ipairs(redis.call('ZRANGE', z, 0, -1)) do ids[#ids + 1] = tonumber(sid) end
end
table.sort(ids)
for _, id in ipairs(ids) do
  if limit >= 0 and #out >= limit then break end
  local f = redis.call('HMGET', jk(id), 'n', 'e', 'a', 'p', 'x', 'm', 's', 'r', 'err', 'res', 'k')
  if f[1] and (name == '' or f[1] == name) then
    out[#out + 1] = {id, f[1], f[2], f[3], f[4], f[5] or '', f[6], f[7], f[8], f[9] or false, f[10] or false, f[11] or ''}
  end
end
return out

-- @op compact
-- ARGV: now. Sweep every final job past its retention.
return sweep(tonumber(ARGV[1]), 1000000)
