-- logq on Redis: every job transition is one of the scripts below, run atomically by the server.
--
-- The file is a prelude (shared helpers) followed by one section per operation, each started
-- by a line "-- @op NAME". The backend (logq/backends/redis.py) makes one script of the prelude
-- and each section, loads it once and calls it by its hash (EVALSHA).
--
-- Keys. KEYS[1] is the queue's counter, "{logq:NAME}:seq"; every other key is the same prefix
-- (so one hash slot: the queue runs on Redis Cluster) followed by:
--   seq        record sequence numbers; a job's id is the number of its ENQUEUE record
--   layout     the version of this layout, written by the queue's first enqueue (checked at open)
--   j:ID       the job (hash): e ENQUEUE record, n name, p priority, m max_attempts, a attempts,
--              s state, r run_at, x lease expiry, f when it is swept (final jobs), k key (if
--              any), err, res; and its history: field "#SEQ" for each later record (type byte,
--              sequence number u64, payload as in the log), written by the same HSET that
--              changes the job
--   r:NAME     ready jobs of a task name (zset: score -priority, member run_at .. id, fixed width)
--   rn         the task names with ready jobs (set)
--   p          pending jobs (zset by id): ready or delayed; d  delayed ones (zset by run_at)
--   a          leases (zset by expiry; member "SEQ:ID,ID,...", SEQ the first record of the lease
--              or extend that wrote it): a job is still active under a member's lease if its
--              own state is active and its own expiry x has come, so finishing or releasing a
--              job leaves the set as it is, and a stale member is dropped when its time comes
--   fin        final jobs to sweep (zset by sweep time; member "SEQ STATE:ID,ID,..." of the jobs
--              that reached final state STATE together): done and cancelled are for good, so
--              such a member's jobs are swept when its time comes; a dead job may be retried,
--              so it is swept only if it is still dead and its own f has come (dead again
--              later, it waits for its new f and its new member)
--   dead, cancelled  the jobs in these final states (zsets by id)
--   n          counts (hash): active, done
--   keys       unique key -> the ids of the live jobs holding it, ascending, space separated
--   wake       list pushed on every change that can make a job leasable (idle leases BLPOP it)
--   watch      job id -> number of clients in `wait` for it; channel "done" tells them
-- So a transition writes the job's hash once (its fields and its record) and moves its id
-- between the sets where a query needs it; a batch (lease_many, ack_many) adds one member to
-- a and one to fin for all its jobs. Times (now) come from the client's clock, as the local
-- backend's do.

local P = string.sub(KEYS[1], 1, -4)
local ENQUEUE, LEASE, ACK, FAIL, RELEASE, EXTEND, CANCEL, RETRY, EXPIRE = 16, 17, 18, 19, 20, 21, 22, 23, 24
local CHUNK = 4000  -- arguments per variadic command (Lua's unpack has a limit near 8000)

local function jk(id) return P .. 'j:' .. id end

-- the hash field and value of a history record
local function hist(rtype, seq, data)
  return string.format('#%d', seq), string.char(rtype) .. struct.pack('<I8', seq) .. data
end

-- run `cmd key ...list` in chunks (ZADD with score/member pairs, ZREM, DEL): the sum of the replies
local function many(cmd, key, list)
  local total = 0
  for i = 1, #list, CHUNK do
    if key then total = total + redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
    else total = total + redis.call(cmd, unpack(list, i, math.min(i + CHUNK - 1, #list))) end
  end
  return total
end

-- the ids of a member of a or fin, and such a member
local function batch_ids(member)
  local ids = {}
  for s in string.gmatch(string.sub(member, string.find(member, ':', 1, true) + 1), '%d+') do
    ids[#ids + 1] = tonumber(s)
  end
  return ids
end

local function batch_member(seq, ids, state)
  local parts = {}
  for i, id in ipairs(ids) do parts[i] = string.format('%d', id) end
  return string.format('%d', seq) .. (state and (' ' .. state) or '') .. ':' .. table.concat(parts, ',')
end

local function ready_member(run_at, id)
  return string.format('%021.6f%016d', run_at, id)
end

local function wake()
  if redis.call('LPUSH', P .. 'wake', '1') > 64 then redis.call('LTRIM', P .. 'wake', 0, 31) end
end

-- make job `id` pending at run_at (ready or delayed); the caller sets its fields
local function make_pending(id, name, prio, run_at, now)
  if run_at <= now then
    redis.call('ZADD', P .. 'r:' .. name, -prio, ready_member(run_at, id))
    redis.call('SADD', P .. 'rn', name)
  else
    redis.call('ZADD', P .. 'd', run_at, id)
  end
  redis.call('ZADD', P .. 'p', id, id)
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

-- a job became final by record `seq` (its hash says so already, f = now + keep): free its key,
-- schedule its sweep, list it as dead or cancelled, tell `wait` callers (`watched`: whether
-- anyone waits on this queue)
local function finished(id, key, now, keep, state, watched, seq)
  drop_key(key, id)
  redis.call('ZADD', P .. 'fin', now + keep, batch_member(seq, {id}, state))
  redis.call('ZADD', P .. state, id, id)
  if watched and redis.call('HEXISTS', P .. 'watch', id) == 1 then
    redis.call('PUBLISH', P .. 'done', id)
  end
end

local function watching() return redis.call('EXISTS', P .. 'watch') == 1 end

-- the fields of an ENQUEUE record (spec/format.md): enqueued_at, run_at, priority, max_attempts,
-- name, key ('' if none)
local function enqueue_fields(rec)
  local at, run_at, prio, max, opts, nlen, klen = struct.unpack('<ddiI4BI2I2', rec)
  local key = ''
  if opts % 2 == 1 then key = string.sub(rec, 30 + nlen, 29 + nlen + klen) end
  return at, run_at, prio, max, string.sub(rec, 30, 29 + nlen), key
end

-- a new pending job from its ENQUEUE record: its hash, its key held, its sets
local function add_job(id, rec, now)
  local _, run_at, prio, max, name, key = enqueue_fields(rec)
  if key ~= '' then
    redis.call('HSET', jk(id), 'e', rec, 'n', name, 'p', prio, 'm', max, 'a', 0, 's', 'pending', 'r', run_at,
               'k', key)
    hold_key(key, id)
  else
    redis.call('HSET', jk(id), 'e', rec, 'n', name, 'p', prio, 'm', max, 'a', 0, 's', 'pending', 'r', run_at)
  end
  make_pending(id, name, prio, run_at, now)
end

-- expire leases that ended at or before now (pending again due now, or dead): returns the count
local function expire_leases(now, retain_dead)
  local leases = redis.call('ZRANGEBYSCORE', P .. 'a', '-inf', now)
  if #leases == 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', P .. 'a', '-inf', now)
  local watched, count = watching(), 0
  for _, member in ipairs(leases) do
    for _, id in ipairs(batch_ids(member)) do
      local f = redis.call('HMGET', jk(id), 's', 'x', 'a', 'm', 'n', 'p', 'k')
      if f[1] == 'active' and tonumber(f[2]) <= now then
        count = count + 1
        local seq = redis.call('INCR', P .. 'seq')
        local dead = tonumber(f[3]) >= tonumber(f[4])
        local field, rec = hist(EXPIRE, seq, struct.pack('<I8dBd', id, now, dead and 1 or 0, now) .. 'lease expired')
        if dead then
          redis.call('HSET', jk(id), 'err', 'lease expired', 'x', '', 's', 'dead', 'f', now + retain_dead, field, rec)
          finished(id, f[7], now, retain_dead, 'dead', watched, seq)
        else
          redis.call('HSET', jk(id), 'err', 'lease expired', 'x', '', 's', 'pending', 'r', now, field, rec)
          make_pending(id, f[5], tonumber(f[6]), now, now)
        end
      end
    end
  end
  if count > 0 then
    redis.call('HINCRBY', P .. 'n', 'active', -count)
    wake()
  end
  return count
end

-- delayed jobs whose run_at has come: ready
local function promote(now)
  local ids = redis.call('ZRANGEBYSCORE', P .. 'd', '-inf', now)
  for _, sid in ipairs(ids) do
    local f = redis.call('HMGET', jk(sid), 'n', 'p', 'r')
    redis.call('ZADD', P .. 'r:' .. f[1], -tonumber(f[2]), ready_member(tonumber(f[3]), tonumber(sid)))
    redis.call('SADD', P .. 'rn', f[1])
  end
  if #ids > 0 then redis.call('ZREMRANGEBYSCORE', P .. 'd', '-inf', now) end
end

-- remove the final jobs whose retention has passed (each job is one key), member by member of
-- fin, until `limit` jobs or more are gone: returns how many
local function sweep(now, limit)
  local swept, done = 0, 0
  while swept < limit do
    local batches = redis.call('ZRANGEBYSCORE', P .. 'fin', '-inf', now, 'LIMIT', 0, 16)
    if #batches == 0 then break end
    for _, member in ipairs(batches) do
      local state, ids, keys = string.match(member, '^%d+ (%a+):'), batch_ids(member), {}
      if state == 'dead' then  -- retried since? its own fields decide
        local still = {}
        for _, id in ipairs(ids) do
          local f = redis.call('HMGET', jk(id), 's', 'f')
          if f[1] == 'dead' and f[2] ~= '' and tonumber(f[2]) <= now then still[#still + 1] = id end
        end
        ids = still
      end
      for i, id in ipairs(ids) do keys[i] = jk(id) end
      local gone = many('DEL', nil, keys)
      if state == 'done' then done = done + gone else many('ZREM', P .. state, ids) end
      swept = swept + gone
    end
    many('ZREM', P .. 'fin', batches)
    if #batches < 16 then break end
  end
  if done > 0 then redis.call('HINCRBY', P .. 'n', 'done', -done) end
  return swept
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

-- the ready members to lease: up to n of the given names, best first (removed from r:NAME)
local function take_ready(names, n)
  local taken = {}
  if #names == 1 then  -- one name: pop its best n at once
    local got = redis.call('ZPOPMIN', P .. 'r:' .. names[1], n)
    for i = 1, #got, 2 do taken[#taken + 1] = got[i] end
    if #taken < n then redis.call('SREM', P .. 'rn', names[1]) end
    return taken
  end
  local cands = {}
  for _, name in ipairs(names) do
    local got = redis.call('ZRANGE', P .. 'r:' .. name, 0, n - 1, 'WITHSCORES')
    for i = 1, #got, 2 do cands[#cands + 1] = {tonumber(got[i + 1]), got[i], name} end
  end
  table.sort(cands, function(x, y)
    if x[1] ~= y[1] then return x[1] < y[1] end
    return x[2] < y[2]
  end)
  local by_name = {}
  for i = 1, math.min(n, #cands) do
    local c = cands[i]
    taken[i] = c[2]
    by_name[c[3]] = by_name[c[3]] or {}
    table.insert(by_name[c[3]], c[2])
  end
  for name, members in pairs(by_name) do
    many('ZREM', P .. 'r:' .. name, members)
    if redis.call('EXISTS', P .. 'r:' .. name) == 0 then redis.call('SREM', P .. 'rn', name) end
  end
  return taken
end

-- @op enqueue
-- ARGV: the jobs' ENQUEUE records (each has the job's every field; a batch's share their time,
-- run_at, priority and max_attempts, and have no key), in order.
-- Reply: the first job's id, or minus the id of the live job that holds the (one) job's key.
-- The queue's first enqueue writes its layout version (redislayout.py LAYOUT; bump both together when
-- the keys below change in a way an older logq cannot read, or a newer one).
local LAYOUT = '1'
local count = #ARGV
local now, run_at, prio, max, name, key = enqueue_fields(ARGV[1])
if count == 1 then
  if key ~= '' then
    local holders = key_holders(key)
    if #holders > 0 then return -holders[1] end
  end
  local id = redis.call('INCR', P .. 'seq')
  if id == 1 then redis.call('SET', P .. 'layout', LAYOUT) end
  add_job(id, ARGV[1], now)
  wake()
  return id
end
local first = redis.call('INCRBY', P .. 'seq', count) - count + 1
if first == 1 then redis.call('SET', P .. 'layout', LAYOUT) end
local ready = run_at <= now
local pend, delayed, by_name = {}, {}, {}
for i = 0, count - 1 do
  local rec = ARGV[i + 1]
  local nlen = struct.unpack('<I2', rec, 26)
  name = string.sub(rec, 30, 29 + nlen)
  local id = first + i
  redis.call('HSET', jk(id), 'e', rec, 'n', name, 'p', prio, 'm', max, 'a', 0, 's', 'pending', 'r', run_at)
  pend[2 * i + 1], pend[2 * i + 2] = id, id
  if ready then
    local members = by_name[name]
    if not members then members = {}; by_name[name] = members end
    members[#members + 1] = -prio
    members[#members + 1] = ready_member(run_at, id)
  else
    delayed[2 * i + 1], delayed[2 * i + 2] = run_at, id
  end
end
many('ZADD', P .. 'p', pend)
many('ZADD', P .. 'd', delayed)
for name, members in pairs(by_name) do
  many('ZADD', P .. 'r:' .. name, members)
  redis.call('SADD', P .. 'rn', name)
end
wake()
return first

-- @op lease
-- ARGV: now, lease_time, n, retain_dead, any (1: every name), then the task names
-- Reply: {0, the next wake-up time or ''}, or {1, expiry, jobs} where jobs holds, per job,
-- id u64, attempts u32, record length u32 (little-endian), then its ENQUEUE record
local now, lease_time, n, retain_dead = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
expire_leases(now, retain_dead)
promote(now)
sweep(now, n + 20)
local names = {}
if ARGV[5] == '1' then names = redis.call('SMEMBERS', P .. 'rn')
else for i = 6, #ARGV do names[#names + 1] = ARGV[i] end end
local taken = take_ready(names, n)
if #taken == 0 then return {0, next_wakeup()} end
local expires = now + lease_time
local take = #taken
local seq = redis.call('INCRBY', P .. 'seq', take) - take  -- the batch's LEASE records, in order
local ids, out = {}, {}
for i = 1, take do
  local id = tonumber(string.sub(taken[i], 22))
  local f = redis.call('HMGET', jk(id), 'e', 'a')
  local attempts = tonumber(f[2]) + 1
  seq = seq + 1
  local field, rec = hist(LEASE, seq, struct.pack('<I8I4dd', id, attempts, now, expires))
  redis.call('HSET', jk(id), 'a', attempts, 'x', expires, 's', 'active', field, rec)
  ids[i] = id
  out[i] = struct.pack('<I8I4I4', id, attempts, #f[1]) .. f[1]
end
many('ZREM', P .. 'p', ids)
redis.call('ZADD', P .. 'a', expires, batch_member(seq - take + 1, ids))
redis.call('HINCRBY', P .. 'n', 'active', take)
return {1, string.format('%.17g', expires), table.concat(out)}

-- @op expire
-- ARGV: now, retain_dead
return expire_leases(tonumber(ARGV[1]), tonumber(ARGV[2]))

-- @op complete
-- Ack or fail leased jobs, each fenced by its attempt; and, all or none (ARGV[2] == '1':
-- ack_many), nothing written if any is refused. Reply: the refusals, each {position (from 1),
-- error...}; empty if every outcome was applied.
-- ARGV: now, all_or_none, retain_done, retain_dead, outcomes: per outcome (little-endian)
--   id u64, attempt i32 (-1: the current lease), kind u8 (0 ack, 1 fail), dead u8 (fail),
--   run_at f64 (fail), u32 length and bytes of the result or error text, u32 length and bytes
--   of the next run's ENQUEUE record (length 0: none)
local now, strict = tonumber(ARGV[1]), ARGV[2] == '1'
local retain_done, retain_dead = tonumber(ARGV[3]), tonumber(ARGV[4])
local blob = ARGV[5]
local outcomes, pos = {}, 1
while pos <= #blob do
  local o = {}
  o.id, o.attempt, o.kind, o.dead, o.run_at, o.text, pos = struct.unpack('<I8i4BBdI4c0', blob, pos)
  o.next, pos = struct.unpack('<I4c0', blob, pos)
  outcomes[#outcomes + 1] = o
end
local refused, seen, ok, fields = {}, {}, {}, {}
for i = 0, #outcomes - 1 do
  local o = outcomes[i + 1]
  local id, attempt, kind = o.id, o.attempt, (o.kind == 0) and 'a' or 'f'
  local what = (kind == 'a') and 'ack' or 'fail'
  local err
  local f = redis.call('HMGET', jk(id), 's', 'a', 'n', 'p', 'k')
  if seen[id] then err = {i + 1, 'twice', id}
  elseif not f[1] then err = {i + 1, 'notfound', id}
  elseif attempt >= 0 and (f[1] ~= 'active' or tonumber(f[2]) ~= attempt) then
    err = {i + 1, 'leaselost', id, attempt, f[1], tonumber(f[2]), what}
  elseif f[1] ~= 'active' then err = {i + 1, 'invalid', id, f[1], what, 'active'} end
  if err then
    if strict then return {err} end
    refused[#refused + 1] = err
  else
    seen[id] = true
    ok[#ok + 1] = o
    fields[o] = f
  end
end
if #ok == 0 then return refused end
local seq = redis.call('INCRBY', P .. 'seq', #ok) - #ok
local watched = watching()
local woke = false
local final = {done = {}, dead = {}}  -- per final state: its first record's seq, then the ids
for _, o in ipairs(ok) do
  local id, kind, text = o.id, o.kind, o.text
  local f = fields[o]
  local name, prio, key = f[3], tonumber(f[4]), f[5]
  seq = seq + 1
  local state
  if kind == 0 then
    state = 'done'
    local field, rec = hist(ACK, seq, struct.pack('<I8d', id, now) .. text)
    redis.call('HSET', jk(id), 'x', '', 'res', text, 's', 'done', 'f', now + retain_done, field, rec)
  else
    local dead, run_at = o.dead == 1, o.run_at
    local field, rec = hist(FAIL, seq, struct.pack('<I8dBd', id, now, dead and 1 or 0, run_at) .. text)
    if dead then
      state = 'dead'
      redis.call('HSET', jk(id), 'x', '', 'err', text, 's', 'dead', 'f', now + retain_dead, field, rec)
    else
      redis.call('HSET', jk(id), 'x', '', 'err', text, 's', 'pending', 'r', run_at, field, rec)
      make_pending(id, name, prio, run_at, now)
      woke = true
    end
  end
  if state then
    local next_rec = o.next
    if next_rec ~= '' then
      local next_key = select(6, enqueue_fields(next_rec))
      if next_key == '' or key_holders(next_key)[1] == id then
        add_job(redis.call('INCR', P .. 'seq'), next_rec, now)
        woke = true
      end
    end
    drop_key(key, id)
    local list = final[state]
    list[#list + 1] = id
    list.seq = list.seq or seq
    if state == 'dead' then redis.call('ZADD', P .. 'dead', id, id) end
    if watched and redis.call('HEXISTS', P .. 'watch', id) == 1 then redis.call('PUBLISH', P .. 'done', id) end
  end
end
redis.call('HINCRBY', P .. 'n', 'active', -#ok)
if #final.done > 0 then
  redis.call('ZADD', P .. 'fin', now + retain_done, batch_member(final.done.seq, final.done, 'done'))
  redis.call('HINCRBY', P .. 'n', 'done', #final.done)
end
if #final.dead > 0 then
  redis.call('ZADD', P .. 'fin', now + retain_dead, batch_member(final.dead.seq, final.dead, 'dead'))
end
if woke then wake() end
return refused

-- @op change
-- Release, extend, cancel or retry one job. ARGV: now, op, id, attempt, seconds, retain_done
-- Reply: {'ok', new lease expiry or ''}, or {error...}
local now, op, id, attempt, seconds = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local allowed = ({release = 'active', extend = 'active', cancel = 'pending', retry = 'dead'})[op]
local f = redis.call('HMGET', jk(id), 's', 'a', 'n', 'p', 'k', 'r')
local state, attempts = f[1], tonumber(f[2])
if not state then return {'notfound', id} end
if attempt >= 0 and (state ~= 'active' or attempts ~= attempt) then
  return {'leaselost', id, attempt, state, attempts, op}
end
if state ~= allowed then return {'invalid', id, state, op, allowed} end
local name, prio, key = f[3], tonumber(f[4]), f[5]
local seq = redis.call('INCR', P .. 'seq')
if op == 'release' then
  local run_at = now + seconds
  local field, rec = hist(RELEASE, seq, struct.pack('<I8d', id, run_at))
  redis.call('HSET', jk(id), 'a', attempts - 1, 'x', '', 's', 'pending', 'r', run_at, field, rec)
  redis.call('HINCRBY', P .. 'n', 'active', -1)
  make_pending(id, name, prio, run_at, now)
  wake()
  return {'ok', ''}
elseif op == 'extend' then
  local expires = now + seconds
  local field, rec = hist(EXTEND, seq, struct.pack('<I8d', id, expires))
  redis.call('ZADD', P .. 'a', expires, string.format('%d:%d', seq, id))
  redis.call('HSET', jk(id), 'x', expires, field, rec)
  return {'ok', string.format('%.17g', expires)}
elseif op == 'cancel' then
  local field, rec = hist(CANCEL, seq, struct.pack('<I8d', id, now))
  redis.call('ZREM', P .. 'd', id)
  redis.call('ZREM', P .. 'p', id)
  redis.call('ZREM', P .. 'r:' .. name, ready_member(tonumber(f[6]), id))
  if redis.call('EXISTS', P .. 'r:' .. name) == 0 then redis.call('SREM', P .. 'rn', name) end
  redis.call('HSET', jk(id), 's', 'cancelled', 'f', now + tonumber(ARGV[6]), field, rec)
  finished(id, key, now, tonumber(ARGV[6]), 'cancelled', watching(), seq)
  return {'ok', ''}
else
  local field, rec = hist(RETRY, seq, struct.pack('<I8d', id, now))
  redis.call('ZREM', P .. 'dead', id)
  redis.call('HSET', jk(id), 'a', 0, 's', 'pending', 'r', now, 'f', '', field, rec)
  make_pending(id, name, prio, now, now)
  hold_key(key, id)
  wake()
  return {'ok', ''}
end

-- @op stats
-- ARGV: now. Promotes due jobs first (as a lease would), then counts.
local now = tonumber(ARGV[1])
promote(now)
local n = redis.call('HMGET', P .. 'n', 'active', 'done')
local counts = {redis.call('ZCARD', P .. 'p'), tonumber(n[1] or 0), tonumber(n[2] or 0),
                redis.call('ZCARD', P .. 'dead'), redis.call('ZCARD', P .. 'cancelled')}
local by_name = {}
for _, name in ipairs(redis.call('SMEMBERS', P .. 'rn')) do
  by_name[#by_name + 1] = name
  by_name[#by_name + 1] = redis.call('ZCARD', P .. 'r:' .. name)
end
local oldest = redis.call('ZRANGE', P .. 'p', 0, 0)
local oldest_rec = ''
if oldest[1] then oldest_rec = redis.call('HGET', jk(oldest[1]), 'e') end
local seq = redis.call('GET', P .. 'seq') or 0
return {counts, by_name, oldest_rec, seq}

-- @op select
-- ARGV: state ('' any), name ('' any), limit (-1 none). Jobs in id order.
local state, name, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local sets = ({pending = {'p'}, active = {'a'}, done = {'fin'}, dead = {'dead'}, cancelled = {'cancelled'}})[state]
  or {'p', 'a', 'fin'}
local ids, seen = {}, {}
for _, z in ipairs(sets) do
  for _, member in ipairs(redis.call('ZRANGE', P .. z, 0, -1)) do
    for _, id in ipairs((z == 'a' or z == 'fin') and batch_ids(member) or {tonumber(member)}) do
      if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
    end
  end
end
table.sort(ids)
local out = {}
for _, id in ipairs(ids) do
  if limit >= 0 and #out >= limit then break end
  local f = redis.call('HMGET', jk(id), 'n', 'e', 'a', 'p', 'x', 'm', 's', 'r', 'err', 'res', 'k')
  if f[1] and (name == '' or f[1] == name) and (state == '' or f[7] == state) then
    out[#out + 1] = {id, f[1], f[2], f[3], f[4], f[5] or '', f[6], f[7], f[8], f[9] or false, f[10] or false, f[11] or ''}
  end
end
return out

-- @op compact
-- ARGV: now. Sweep every final job past its retention.
return sweep(tonumber(ARGV[1]), 1000000)
