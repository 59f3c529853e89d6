// SPDX-License-Identifier: BSL-1.0
// Copyright 2026 the lockstore authors. See LICENSE_1_0.txt or https://www.boost.org/LICENSE_1_0.txt
// The Redis backend's Lua scripts (impl/redis.ipp).
#pragma once

#include <array>

namespace lockstore {

namespace detail::redis_scripts {

// A lease is a string `<prefix>lease:<key>` with a PEXPIRE TTL:
// "<token> <fence> <acquired ms> <owner>" (the owner last: it may hold
// spaces). A string, so that a free key is taken by one SET NX PX.
#define LOCKSTORE_REDIS_LEASE_FIELDS                                                         \
  "local function lease_fields(value)\n"                                                     \
  "  local a = string.find(value, ' ', 1, true)\n"                                           \
  "  local b = string.find(value, ' ', a + 1, true)\n"                                       \
  "  local c = string.find(value, ' ', b + 1, true)\n"                                       \
  "  return string.sub(value, 1, a - 1), string.sub(value, a + 1, b - 1),\n"                 \
  "         string.sub(value, b + 1, c - 1), string.sub(value, c + 1)\n"                     \
  "end\n"

// The queue of acquire() callers, per key: a sorted set `<prefix>queue:<key>`
// of tickets (score = ticket) and a hash `<prefix>queue-expiry:<key>` of
// each ticket's expiry (server ms) plus the key's ticket counter ('next').
// Both expire when no waiter has refreshed a ticket for twice the ticket TTL.

// KEYS[1] lease, KEYS[2] fence counter, KEYS[3] queue, KEYS[4] queue
// expiries; ARGV token, owner, ttl ms, ticket, ticket ttl ms. The ticket is
// '' for try_acquire (the queue is ignored), '0' for a waiter without one yet.
// Granted: {token, fence} (strings). Refused: {ms to wait at most, the
// caller's ticket} (integers). A live lease refuses everyone, its own owner
// included (every acquisition is its own holder). A free lease goes to a
// queued caller only if no live ticket is older.
// The fence is max(last + 1, server clock in µs): the clock alone when the
// counter was lost (see docs/BACKENDS.md, "Redis and restarts").
inline constexpr const char* acquire = R"lua(
local mine = tonumber(ARGV[4])
local now = redis.call('TIME')
local micros = string.sub(now[2] + 1000000, 2)
local fence = now[1] .. micros
local rest = ' ' .. now[1] .. string.sub(micros, 1, 3) .. ' ' .. ARGV[2]
local function granted()
  local last = redis.call('SET', KEYS[2], fence, 'GET')
  if last and tonumber(last) >= tonumber(fence) then
    fence = string.format('%.0f', tonumber(last) + 1)
    redis.call('SET', KEYS[2], fence)
    redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. rest, 'PX', ARGV[3])
  end
  return {ARGV[1], fence}
end
if not mine and redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. rest, 'NX', 'PX', ARGV[3]) then
  return granted()
end
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local wait_ms = nil
-- GET, not EXISTS: a lease key of another layout (a hash) fails WRONGTYPE.
if redis.call('GET', KEYS[1]) then
  wait_ms = redis.call('PTTL', KEYS[1])
elseif mine then
  while true do
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head then break end
    local expires = tonumber(redis.call('HGET', KEYS[4], head) or '0')
    if expires > now_ms then
      if mine == 0 or tonumber(head) < mine then wait_ms = expires - now_ms end
      break
    end
    redis.call('ZREM', KEYS[3], head)
    redis.call('HDEL', KEYS[4], head)
  end
end
if wait_ms then
  if not mine then return {wait_ms, 0} end
  if mine == 0 then mine = redis.call('HINCRBY', KEYS[4], 'next', 1) end
  redis.call('ZADD', KEYS[3], mine, mine)
  redis.call('HSET', KEYS[4], mine, now_ms + tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[3], 2 * tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[4], 2 * tonumber(ARGV[5]))
  return {wait_ms, mine}
end
-- Free, and this acquire() caller is first in line.
if mine ~= 0 then
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('HDEL', KEYS[4], ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. rest, 'PX', ARGV[3])
return granted())lua";

// The explicit takeover (RedisLock::take_over). KEYS[1] lease, KEYS[2] fence
// counter; ARGV token, owner, ttl ms. Takes the key when it is free or held
// by the same owner, with a new token and a larger fence (the old guard is
// fenced out), never shortening the lease. {token, fence, ms it runs}
// (strings, then an integer) when taken; {ms left} when another owner holds it.
inline constexpr const char* take_over = LOCKSTORE_REDIS_LEASE_FIELDS R"lua(
local keep_ms = 0
local lease = redis.call('GET', KEYS[1])
if lease then
  local _, _, _, owner = lease_fields(lease)
  if owner ~= ARGV[2] then return {redis.call('PTTL', KEYS[1])} end
  keep_ms = redis.call('PTTL', KEYS[1])
end
local now = redis.call('TIME')
local micros = string.sub(now[2] + 1000000, 2)
local fence = now[1] .. micros
local last = redis.call('GET', KEYS[2])
if last and tonumber(last) >= tonumber(fence) then fence = string.format('%.0f', tonumber(last) + 1) end
redis.call('SET', KEYS[2], fence)
local ttl = math.max(tonumber(ARGV[3]), keep_ms)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. ' ' .. now[1] .. string.sub(micros, 1, 3) .. ' ' .. ARGV[2],
           'PX', ttl)
return {ARGV[1], fence, ttl})lua";

// KEYS[1] lease; ARGV token, ttl ms. 1 when extended.
inline constexpr const char* extend = R"lua(
local lease = redis.call('GET', KEYS[1])
if lease and string.sub(lease, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0)lua";

// The announcement of a freed key on the channel: '<next ticket>:<key>',
// the oldest live ticket among the first few, or 0 (anyone may look). None
// when nobody is queued: every acquire() caller that waits holds a ticket
// (one whose ticket lapsed looks again on its own, within a third of the
// ticket TTL).
#define LOCKSTORE_REDIS_ANNOUNCE                                                             \
  "local function announce(channel, queue, expiries, key)\n"                                 \
  "  local tickets = redis.call('ZRANGE', queue, 0, 4)\n"                                    \
  "  if #tickets == 0 then return end\n"                                                     \
  "  local now = redis.call('TIME')\n"                                                       \
  "  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"         \
  "  local next_ticket = '0'\n"                                                              \
  "  for _, ticket in ipairs(tickets) do\n"                                                  \
  "    if tonumber(redis.call('HGET', expiries, ticket) or '0') > now_ms then\n"             \
  "      next_ticket = ticket\n"                                                             \
  "      break\n"                                                                            \
  "    end\n"                                                                                \
  "  end\n"                                                                                  \
  "  redis.call('PUBLISH', channel, next_ticket .. ':' .. key)\n"                            \
  "end\n"

// KEYS[1] lease, KEYS[2] queue, KEYS[3] queue expiries; ARGV field ('token'
// or 'owner'), expected value, channel, key. Deletes the lease when that
// field matches, and announces it. 1 when deleted.
inline constexpr const char* release = LOCKSTORE_REDIS_LEASE_FIELDS LOCKSTORE_REDIS_ANNOUNCE R"lua(
local lease = redis.call('GET', KEYS[1])
if not lease then return 0 end
local matches
if ARGV[1] == 'token' then
  matches = string.sub(lease, 1, #ARGV[2] + 1) == ARGV[2] .. ' '
else
  local _, _, _, owner = lease_fields(lease)
  matches = owner == ARGV[2]
end
if not matches then return 0 end
redis.call('DEL', KEYS[1])
announce(ARGV[3], KEYS[2], KEYS[3], ARGV[4])
return 1)lua";

// KEYS[1] lease, KEYS[2] queue, KEYS[3] queue expiries; ARGV ticket, channel,
// key. A waiter that gives up leaves the queue; if the lease is free, the
// next in line is told.
inline constexpr const char* leave = LOCKSTORE_REDIS_ANNOUNCE R"lua(
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then announce(ARGV[2], KEYS[2], KEYS[3], ARGV[3]) end
return 1)lua";

// KEYS[1] lease. {owner, fence, acquired_ms, expires_ms} of a live lease, or
// nil. With ARGV[1] set (channel, ARGV[2] key), also deletes it and tells
// anyone listening (an operator's act, so not by ticket).
inline constexpr const char* inspect = LOCKSTORE_REDIS_LEASE_FIELDS R"lua(
local lease = redis.call('GET', KEYS[1])
if not lease then return nil end
local _, fence, acquired_ms, owner = lease_fields(lease)
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expires = string.format('%.0f', now_ms + redis.call('PTTL', KEYS[1]))
if ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[1], '0:' .. ARGV[2])
end
return {owner, fence, acquired_ms, expires})lua";

// KEYS[1] lease; ARGV token, then the caller's commands, each as its
// argument count and its arguments. Runs them only while the token holds
// the lease (a live key: Redis expires it exactly at its TTL), in this one
// script, so no other holder can be granted in between. Each reply comes
// back as text: 'n' for nil, 'i<integer>', 's<string>'. A command that
// fails stops the script with its error; Redis keeps what ran before it.
inline constexpr const char* fenced = R"lua(
local lease = redis.call('GET', KEYS[1])
if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then
  return redis.error_reply('LOCKSTORE_LEASE_LOST')
end
local replies = {}
local at = 2
while at <= #ARGV do
  local count = tonumber(ARGV[at])
  local command = {}
  for i = 1, count do command[i] = ARGV[at + i] end
  at = at + count + 1
  local reply = redis.call(unpack(command))
  if type(reply) == 'number' then
    replies[#replies + 1] = 'i' .. string.format('%d', reply)
  elseif type(reply) == 'string' then
    replies[#replies + 1] = 's' .. reply
  elseif type(reply) == 'table' and reply.ok then
    replies[#replies + 1] = 's' .. reply.ok
  else
    replies[#replies + 1] = 'n'
  end
end
return replies)lua";

// KEYS[1] the gate's key for a resource; ARGV the fence, as 20 digits with
// leading zeros, so that comparing the strings compares the numbers (Lua's
// numbers are doubles: not exact above 2^53). 1 when admitted.
inline constexpr const char* admit = R"lua(
local highest = redis.call('GET', KEYS[1])
if highest and highest > ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1)lua";

#undef LOCKSTORE_REDIS_ANNOUNCE
#undef LOCKSTORE_REDIS_LEASE_FIELDS

inline constexpr std::array<const char*, 8> all = {acquire, extend, release, inspect, leave, take_over, fenced, admit};
enum Script {
  acquire_script,
  extend_script,
  release_script,
  inspect_script,
  leave_script,
  take_over_script,
  fenced_script,
  admit_script
};

}  // namespace detail::redis_scripts

}  // namespace lockstore
