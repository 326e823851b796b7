"""The Lua of generic requests (DESIGN section 11): the read and the write script every
CMD_READ / CMD_WRITE request runs as, and the application-script runner they share.

Kept apart from :mod:`netmigrate.agent.generic` (which checks requests and builds their calls)
because the scripts are data that Redis runs: their SHA1s name them in EVALSHA, and their
behaviour is described where they are (see that module's docstring for why a request runs as
one script).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from netmigrate.rediscmd.watch import WATCH_SCRIPT

#: Lua: one RESP2 reply, as text, from what ``redis.pcall`` returned.
_ENCODE = b"""
local function enc(v)
  local t = type(v)
  if t == 'string' then return '$' .. #v .. '\\r\\n' .. v .. '\\r\\n' end
  if t == 'number' then return ':' .. string.format('%d', v) .. '\\r\\n' end
  if t == 'table' then
    if v.err then return '-' .. v.err .. '\\r\\n' end
    if v.ok then return '+' .. v.ok .. '\\r\\n' end
    local out = {'*' .. #v .. '\\r\\n'}
    for i = 1, #v do out[i + 1] = enc(v[i]) end
    return table.concat(out)
  end
  if v == true then return ':1\\r\\n' end
  return '$-1\\r\\n'
end
"""

#: Lua: one RESP3 reply from what ``redis.pcall`` returned under ``redis.setresp(3)``. Lua
#: turns a RESP3 null inside an array into a hole, so ``shape`` (the same command's reply
#: under RESP2, where a null is ``false``, or nil) gives the nulls at the end of an array and
#: the order of a map's or a set's elements as Redis sent them.
_ENCODE3 = b"""
local function dbl(x)
  if x ~= x then return 'nan' end
  if x == math.huge then return 'inf' end
  if x == -math.huge then return '-inf' end
  return string.format('%.17g', x)
end
local function enc3(v, shape)
  local t = type(v)
  if t == 'string' then return '$' .. #v .. '\\r\\n' .. v .. '\\r\\n' end
  if t == 'number' then return ':' .. string.format('%d', v) .. '\\r\\n' end
  if t == 'boolean' then return v and '#t\\r\\n' or '#f\\r\\n' end
  if t ~= 'table' then return '_\\r\\n' end
  if v.err then return '-' .. v.err .. '\\r\\n' end
  if v.ok then return '+' .. v.ok .. '\\r\\n' end
  if v.double then return ',' .. dbl(v.double) .. '\\r\\n' end
  if v.big_number then return '(' .. v.big_number .. '\\r\\n' end
  if v.verbatim_string then
    local b = v.verbatim_string.format .. ':' .. v.verbatim_string.string
    return '=' .. #b .. '\\r\\n' .. b .. '\\r\\n'
  end
  local ordered = type(shape) == 'table' and shape.err == nil
  local out, n = {}, 0
  if v.map then
    if ordered and #shape % 2 == 0 then
      for i = 1, #shape, 2 do
        out[#out + 1] = enc3(shape[i])
        out[#out + 1] = enc3(v.map[shape[i]], shape[i + 1])
      end
      n = #shape / 2
    else
      for k, x in pairs(v.map) do
        out[#out + 1] = enc3(k)
        out[#out + 1] = enc3(x)
        n = n + 1
      end
    end
    return '%' .. n .. '\\r\\n' .. table.concat(out)
  end
  if v.set then
    if ordered then
      for i = 1, #shape do out[i] = enc3(shape[i]) end
      n = #shape
    else
      for k in pairs(v.set) do
        n = n + 1
        out[n] = enc3(k)
      end
    end
    return '~' .. n .. '\\r\\n' .. table.concat(out)
  end
  n = table.maxn(v)
  if ordered then
    while shape[n + 1] == false do n = n + 1 end
  end
  for i = 1, n do
    local sub = nil
    if ordered and type(shape[i]) == 'table' then sub = shape[i] end
    out[i] = enc3(v[i], sub)
  end
  return '*' .. n .. '\\r\\n' .. table.concat(out)
end
"""

#: Lua: an application's script (EVAL / EVAL_RO, the form the gateway sends EVALSHA and FCALL
#: in) run inside the request's script, since Redis forbids EVAL in a script. ``script(i, j,
#: r3)`` runs the command ``ARGV[i..j]`` and answers its reply as RESP text (``ret``: what
#: Redis' ``luaReplyToRedisReply`` writes) and whether the body ran. The body sees its own
#: KEYS and ARGV, and a ``redis`` whose ``call`` / ``pcall`` refuse a key it did not declare and
#: a write that names no key (FLUSHALL ...): at a migration target only the declared keys were
#: pulled and are marked dirty, and the agent's reserved keys are never declared.
_SCRIPT = b"""
local real = redis
local sresp = 2
local function clean(s) return (string.gsub(s, '[\\r\\n]', ' ')) end
local function rdbl(x)
  if x == math.huge then return 'inf' end
  if x == -math.huge then return '-inf' end
  return string.format('%.17g', x)
end
local function bulk(s) return '$' .. #s .. '\\r\\n' .. s .. '\\r\\n' end
local function ret(v, r3, depth)
  local t = type(v)
  if t == 'string' then return bulk(v) end
  if t == 'number' then return ':' .. string.format('%d', v) .. '\\r\\n' end
  if t == 'boolean' then
    if sresp == 2 then
      if v then return ':1\\r\\n' end
      return r3 and '_\\r\\n' or '$-1\\r\\n'
    end
    if r3 then return v and '#t\\r\\n' or '#f\\r\\n' end
    return v and ':1\\r\\n' or ':0\\r\\n'
  end
  if t ~= 'table' then return r3 and '_\\r\\n' or '$-1\\r\\n' end
  -- Redis' own limit for a nested reply (a table that holds itself ends there).
  if depth > 1000 then return '-ERR reached lua stack limit\\r\\n' end
  depth = depth + 1
  local x = rawget(v, 'err')
  if type(x) == 'string' then return '-' .. clean(x) .. '\\r\\n' end
  x = rawget(v, 'ok')
  if type(x) == 'string' then return '+' .. clean(x) .. '\\r\\n' end
  x = rawget(v, 'double')
  if type(x) == 'number' then
    if r3 then return ',' .. rdbl(x) .. '\\r\\n' end
    return bulk(rdbl(x))
  end
  x = rawget(v, 'big_number')
  if type(x) == 'string' then
    if r3 then return '(' .. x .. '\\r\\n' end
    return bulk(x)
  end
  x = rawget(v, 'verbatim_string')
  if type(x) == 'table' and type(rawget(x, 'format')) == 'string'
      and type(rawget(x, 'string')) == 'string' then
    if r3 then
      local b = x.format .. ':' .. x.string
      return '=' .. #b .. '\\r\\n' .. b .. '\\r\\n'
    end
    return bulk(x.string)
  end
  local out, n = {}, 0
  x = rawget(v, 'map')
  if type(x) == 'table' then
    for k, e in pairs(x) do
      out[#out + 1] = ret(k, r3, depth)
      out[#out + 1] = ret(e, r3, depth)
      n = n + 1
    end
    return (r3 and '%' .. n or '*' .. 2 * n) .. '\\r\\n' .. table.concat(out)
  end
  x = rawget(v, 'set')
  if type(x) == 'table' then
    for k in pairs(x) do out[#out + 1] = ret(k, r3, depth) end
    return (r3 and '~' or '*') .. #out .. '\\r\\n' .. table.concat(out)
  end
  while true do
    x = rawget(v, n + 1)
    if x == nil then break end
    n = n + 1
    out[n] = ret(x, r3, depth)
  end
  return '*' .. n .. '\\r\\n' .. table.concat(out)
end
local UNDECLARED = 'ERR NetMigrate: a script may touch only the keys it declares (numkeys)'
local KEYLESS_WRITE = 'ERR NetMigrate: a script may not run a write that names no key'
local READ_ONLY = 'ERR Write commands are not allowed from read-only scripts.'
local SHEBANG_FLAGS = {['no-writes'] = true, ['allow-oom'] = true, ['allow-stale'] = true,
  ['no-cluster'] = true, ['allow-cross-slot-keys'] = true}
local known = {}
local function flags(name)
  local lname = string.lower(tostring(name))
  local f = known[lname]
  if f == nil then
    f = {}
    local info = real.pcall('COMMAND', 'INFO', lname)
    if type(info) == 'table' and type(info[1]) == 'table' then
      f[1] = info[1][4]  -- the first key's position: 0 for a command without keys
      for _, x in ipairs(info[1][3]) do
        if type(x) == 'table' then x = x.ok end
        if type(x) == 'string' then f[x] = true end
      end
    end
    known[lname] = f
  end
  return f
end
-- Why the body may not make this call; nil: Redis runs it (or answers its own error).
local function refusal(declared, nowrites, name, ...)
  local f = flags(name)
  if f.noscript then return nil end  -- Redis refuses it in a script and touches nothing
  if nowrites and f.write then return READ_ONLY end
  local keys = real.pcall('COMMAND', 'GETKEYS', name, ...)
  if type(keys) ~= 'table' then return nil end
  if keys.err then
    -- A command with keys whose arguments Redis cannot read: it answers its own error when
    -- called. Else the command has no key argument (GETKEYS cannot take one without any).
    if string.find(keys.err, 'Invalid', 1, true) or (f[1] or 0) > 0 then return nil end
    keys = {}
  end
  if #keys == 0 then
    if f.write then return KEYLESS_WRITE end
    return nil
  end
  for _, k in ipairs(keys) do
    if not declared[k] then return UNDECLARED end
  end
  return nil
end
-- What the body sees as redis, _G, loadstring and load: every way to the real redis goes
-- through the checks (a chunk it compiles sees the same), and none of them can be changed.
-- Compiled under its own name: an error raised in it is not placed at a line of the body.
local guard = loadstring([[
local real, realG, compile, refusal, declared, nowrites, setresp, KEYS, ARGV = ...
local function readonly() error('Attempt to modify a readonly table', 2) end
local sealed = setmetatable({}, {__newindex = readonly, __metatable = false})
local g = {setresp = setresp}
g.call = function(...)
  local refused = refusal(declared, nowrites, ...)
  if refused then error({err = refused}) end
  return real.call(...)
end
g.pcall = function(...)
  local refused = refusal(declared, nowrites, ...)
  if refused then return {err = refused} end
  return real.pcall(...)
end
local R = setmetatable({}, {__index = function(_, k)
  local v = g[k]
  if v == nil then v = real[k] end
  return v
end, __newindex = readonly, __metatable = sealed})
local G, ls, ld
G = setmetatable({}, {__index = function(_, k)
  if k == 'redis' then return R end
  if k == '_G' then return G end
  if k == 'loadstring' then return ls end
  if k == 'load' then return ld end
  if k == 'KEYS' then return KEYS end
  if k == 'ARGV' then return ARGV end
  return realG[k]
end, __newindex = readonly, __metatable = sealed})
ls = function(s, name)
  if type(s) ~= 'string' then return compile(s, name) end
  local f, e = compile('local redis, _G, loadstring, load, KEYS, ARGV = ...; ' .. s, name)
  if not f then return f, e end
  return function(...) return f(R, G, ls, ld, KEYS, ARGV, ...) end
end
ld = function(fn, name)
  local parts = {}
  while true do
    local p = fn()
    if p == nil or p == '' then break end
    parts[#parts + 1] = p
  end
  return ls(table.concat(parts), name)
end
return R, G, ls, ld
]], '=netmigrate')
local function setresp(v)
  real.setresp(v)
  sresp = v
end
local function fail(message) return '-' .. clean(message) .. '\\r\\n', false end
local function script(i, j, r3)
  local body, nkeys = ARGV[i + 1], tonumber(ARGV[i + 2])
  if not nkeys or nkeys ~= math.floor(nkeys) then
    return fail('ERR value is not an integer or out of range')
  end
  if nkeys < 0 then return fail("ERR Number of keys can't be negative") end
  local keys, args, declared = {}, {}, {}
  for x = 1, nkeys do
    keys[x] = ARGV[i + 2 + x]
    declared[keys[x]] = true
  end
  for x = i + 3 + nkeys, j do args[#args + 1] = ARGV[x] end
  local src, nowrites = body, false
  if string.sub(src, 1, 2) == '#!' then
    -- The shebang is not Lua; its newline stays, so line numbers do too.
    local nl = string.find(src, '\\n', 1, true)
    local line = nl and string.sub(src, 1, nl - 1) or src
    src = nl and string.sub(src, nl) or ''
    local parts = {}
    for part in string.gmatch(line, '%S+') do parts[#parts + 1] = part end
    if parts[1] ~= '#!lua' then
      return fail('ERR Unexpected engine in script shebang: ' .. tostring(parts[1]))
    end
    for x = 2, #parts do
      if string.sub(parts[x], 1, 6) ~= 'flags=' then
        return fail('ERR Unknown lua shebang option: ' .. parts[x])
      end
      for flag in string.gmatch(string.sub(parts[x], 7), '[^,]+') do
        if not SHEBANG_FLAGS[flag] then
          return fail('ERR Unexpected flag in script shebang: ' .. flag)
        end
        if flag == 'no-writes' then nowrites = true end
      end
    end
  end
  local f, e = loadstring(
    'local KEYS, ARGV, redis, _G, loadstring, load = ...; ' .. src, '@user_script')
  if not f then return fail('ERR Error compiling script (new function): ' .. e) end
  local R, G, ls, ld = guard(real, _G, loadstring, refusal, declared, nowrites, setresp, keys,
    args)
  sresp = 2
  real.setresp(2)
  local ok, v = xpcall(function() return f(keys, args, R, G, ls, ld) end,
    __redis__err__handler)
  if ok then return ret(v, r3, 0), true end
  if type(v) == 'table' and type(v.err) == 'string' then
    local msg = v.err .. ' script: ' .. real.sha1hex(body)
    if v.source == '@user_script' and v.line then
      msg = msg .. ', on @user_script:' .. v.line .. '.'
    else  -- raised in a call the body made: which line made it is not known here
      msg = msg .. ', on @user_script.'
    end
    return '-' .. clean(msg) .. '\\r\\n', true
  end
  return '-ERR Error running script: ' .. clean(tostring(v)) .. '\\r\\n', true
end
local scripts = {eval = true, eval_ro = true}
"""

#: ARGV: the RESP version, the number of commands, then per command its argument count and
#: its arguments. Returns their replies as RESP text, one after another (a pipeline batch).
READ_SCRIPT = (
    b"#!lua flags=no-writes,allow-cross-slot-keys\n"
    + _ENCODE
    + _ENCODE3
    + _SCRIPT
    + b"""
local resp3, n, pos, out = ARGV[1] == '3', tonumber(ARGV[2]), 3, {}
for c = 1, n do
  local argc = tonumber(ARGV[pos])
  if scripts[string.lower(ARGV[pos + 1])] then
    out[c] = script(pos + 1, pos + argc, resp3)
    redis.setresp(2)
  elseif resp3 then
    -- A read runs twice in one script (nothing changes in between): RESP3 for the types,
    -- RESP2 for the nulls and the order (see enc3).
    local shape = redis.pcall(unpack(ARGV, pos + 1, pos + argc))
    redis.setresp(3)
    out[c] = enc3(redis.pcall(unpack(ARGV, pos + 1, pos + argc)), shape)
    redis.setresp(2)
  else
    out[c] = enc(redis.pcall(unpack(ARGV, pos + 1, pos + argc)))
  end
  pos = pos + 1 + argc
end
return table.concat(out)
"""
)

#: ARGV: record key, TTL ms, reply header (HEADER_LEN bytes), dirty set or "", number of
#: commands, "1" for a transaction, the RESP version, then per command: its key count, its
#: argument count, "1" if it only reads, its arguments (its keys are the next ones of KEYS). Returns
#: ``{1, record}`` when the request id is recorded already, else ``{0, reply, key, ...}``:
#: the RESP reply (EXEC's array for a transaction, the replies one after another for a
#: pipeline batch) and the keys it marked dirty. A request none of whose commands succeeded
#: (outside a transaction) records nothing and marks nothing: Redis applied nothing, and a
#: retry may succeed. A transaction whose first command is the watch check
#: (:data:`~netmigrate.rediscmd.watch.WATCH_SCRIPT` in ``check`` mode) answers EXEC's null
#: reply, running nothing, when a watched key changed.
WRITE_SCRIPT = (
    b"#!lua flags=allow-cross-slot-keys\n"
    + _ENCODE
    + _ENCODE3
    + _SCRIPT
    + b"""
local WATCH_SCRIPT = [==["""
    + WATCH_SCRIPT
    + b"""]==]
local pop = {blpop = 'LPOP', brpop = 'RPOP', bzpopmin = 'ZPOPMIN', bzpopmax = 'ZPOPMAX'}
local alike = {brpoplpush = 'RPOPLPUSH', blmove = 'LMOVE', blmpop = 'LMPOP', bzmpop = 'ZMPOP'}
-- ARGV[i..j] is one command. A blocking command (only in a transaction: the agent checks it)
-- runs as Redis runs it inside MULTI: its non-blocking form, answering at once.
local function run(i, j)
  local name = string.lower(ARGV[i])
  local single = pop[name]
  if single then
    for x = i + 1, j - 1 do
      local v = redis.pcall(single, ARGV[x])
      if type(v) == 'table' and v.err then return v end
      if single == 'LPOP' or single == 'RPOP' then
        if v then return {ARGV[x], v} end
      elseif #v > 0 then
        return {ARGV[x], v[1], v[2]}
      end
    end
    return nil
  end
  local same = alike[name]
  if same == 'RPOPLPUSH' or same == 'LMOVE' then
    return redis.pcall(same, unpack(ARGV, i + 1, j - 1))
  end
  if same then  -- BLMPOP / BZMPOP timeout numkeys ...: LMPOP / ZMPOP numkeys ...
    return redis.pcall(same, unpack(ARGV, i + 2, j))
  end
  return redis.pcall(unpack(ARGV, i, j))
end
local old = redis.call('GET', ARGV[1])
if old then return {1, old} end
local n, transaction = tonumber(ARGV[5]), ARGV[6] == '1'
local encode = enc
if ARGV[7] == '3' then
  redis.setresp(3)
  encode = enc3
end
local pos, k = 8, 1
local replies, marked = {}, {}
local applied = false
-- A watched transaction (WATCH through the gateway) starts with the watch check: when a
-- watched key changed since WATCH read it, EXEC answers its null reply and nothing runs.
local watched = transaction and n > 0 and string.lower(ARGV[11]) == 'eval_ro'
  and ARGV[12] == WATCH_SCRIPT and ARGV[14 + tonumber(ARGV[8])] == 'check'
for c = 1, n do
  local nkeys, argc = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  local ran
  if c == 1 and watched then
    if script(pos + 3, pos + 2 + argc, false) ~= ':1\\r\\n' then
      local out = ARGV[7] == '3' and '_\\r\\n' or '*-1\\r\\n'
      redis.call('SET', ARGV[1], 'd' .. ARGV[3] .. struct.pack('>I4', #out) .. out, 'PX', ARGV[2])
      return {0, out}
    end
    redis.setresp(encode == enc3 and 3 or 2)
    ran = false
  elseif scripts[string.lower(ARGV[pos + 3])] then
    -- A script that failed may have written before it failed (Redis does not undo): its
    -- keys are marked all the same, unless it did not compile.
    replies[#replies + 1], ran = script(pos + 3, pos + 2 + argc, encode == enc3)
    redis.setresp(encode == enc3 and 3 or 2)
  else
    local shape = nil
    if encode == enc3 and ARGV[pos + 2] == '1' then
      -- A read among writes: its RESP2 shape as the read script takes it (see enc3).
      redis.setresp(2)
      shape = run(pos + 3, pos + 2 + argc)
      redis.setresp(3)
    end
    local r = run(pos + 3, pos + 2 + argc)
    ran = not (type(r) == 'table' and r.err ~= nil)
    replies[#replies + 1] = encode(r, shape)
  end
  if ran then
    applied = true
    for i = k, k + nkeys - 1 do marked[#marked + 1] = KEYS[i] end
  end
  pos, k = pos + 3 + argc, k + nkeys
end
local out = table.concat(replies)
if transaction then out = '*' .. #replies .. '\\r\\n' .. out end
if not applied and not transaction then return {0, out} end
if ARGV[4] ~= '' and #marked > 0 then
  for i = 1, #marked, 4000 do
    redis.call('SADD', ARGV[4], unpack(marked, i, math.min(i + 3999, #marked)))
  end
end
redis.call('SET', ARGV[1], 'd' .. ARGV[3] .. struct.pack('>I4', #out) .. out, 'PX', ARGV[2])
local answer = {0, out}
for i = 1, #marked do answer[i + 2] = marked[i] end
return answer
"""
)

#: Blocking commands the write script runs as their non-blocking forms inside a transaction.
NON_BLOCKING_FORMS = frozenset(
    {"blpop", "brpop", "bzpopmin", "bzpopmax", "brpoplpush", "blmove", "blmpop", "bzmpop"}
)

#: Application scripts the request scripts run themselves (``script`` in :data:`_SCRIPT`);
#: EVALSHA and FCALL reach the agent in this form (the gateway keeps the bodies).
SCRIPT_COMMANDS = frozenset({"eval", "eval_ro"})

READ_SCRIPT_SHA = hashlib.sha1(READ_SCRIPT).hexdigest().encode()
WRITE_SCRIPT_SHA = hashlib.sha1(WRITE_SCRIPT).hexdigest().encode()


def bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def array(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n%b" % (len(args), b"".join(map(bulk, args)))


SCRIPT_LOADS = (
    array((b"SCRIPT", b"LOAD", READ_SCRIPT)),
    array((b"SCRIPT", b"LOAD", WRITE_SCRIPT)),
)
