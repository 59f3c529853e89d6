// The npm peers on the workloads contention_bench and server_bench run, on
// the same servers, printing the same JSON lines (benchmarks/README.md):
//   contention: N clients loop acquire -> release for a fixed time, on one
//               key or a key each. Redis and PostgreSQL clients are
//               processes with their own connections, as lockstore's are;
//               async-mutex clients are async tasks in one process.
//   handoff:    release -> the waiter (another process) holds, p50/p99.
// Every peer runs with its library's defaults, except redlock's retryCount,
// which is made unlimited so that a contended acquire waits instead of
// failing after 10 tries.
//
//   node bench.mjs [--smoke] [--peers redis-semaphore,redlock,advisory-lock,async-mutex]
//                  [--workers 1,2,4,8,16] [--keys one,distinct] [--seconds S]
//                  [--handoffs N] [--redis HOST:PORT] [--postgres CONNINFO]
// Servers default to $LOCKSTORE_TEST_REDIS and $LOCKSTORE_TEST_POSTGRES.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Mutex as AsyncMutex } from 'async-mutex';
import { Mutex as SemaphoreMutex } from 'redis-semaphore';
import Redlock from 'redlock';
import Redis from 'ioredis';
import advisoryLockModule from 'advisory-lock';

const advisoryLock = advisoryLockModule.default ?? advisoryLockModule;  // a CommonJS module

const here = fileURLToPath(import.meta.url);
const nowNs = () => process.hrtime.bigint();  // CLOCK_MONOTONIC: the same clock in every process

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}
const smoke = process.argv.includes('--smoke');

function fail(message) {
  console.error(`peers/bench.mjs: ${message}`);
  process.exit(1);
}

function redisEndpoint() {
  const endpoint = option('--redis', process.env.LOCKSTORE_TEST_REDIS);
  if (!endpoint) fail('give --redis HOST:PORT or set LOCKSTORE_TEST_REDIS');
  const colon = endpoint.lastIndexOf(':');
  return { host: endpoint.slice(0, colon), port: Number(endpoint.slice(colon + 1)) };
}

// libpq "key=value" conninfo (as scripts/test-servers.sh writes) or a URL.
function postgresUrl() {
  const conninfo = option('--postgres', process.env.LOCKSTORE_TEST_POSTGRES);
  if (!conninfo) fail('give --postgres CONNINFO or set LOCKSTORE_TEST_POSTGRES');
  if (conninfo.startsWith('postgres')) return conninfo;
  const fields = Object.fromEntries(conninfo.trim().split(/\s+/).map((pair) => pair.split('=')));
  const auth = fields.user ? `${encodeURIComponent(fields.user)}${fields.password ? ':' + encodeURIComponent(fields.password) : ''}@` : '';
  return `postgres://${auth}${fields.host ?? '127.0.0.1'}:${fields.port ?? 5432}/${fields.dbname ?? 'postgres'}`;
}

// --- the peers: open(clientIndex) -> { lock(key) -> release(), close() } -----

const keyBase = 'lockstore-peerbench:';  // shared by every client of one run

const peers = {
  'redis-semaphore': async () => {
    const redis = new Redis(redisEndpoint());
    return {
      lock: async (key) => {
        const mutex = new SemaphoreMutex(redis, key, { lockTimeout: 30000, acquireTimeout: 60000 });
        await mutex.acquire();
        return () => mutex.release();
      },
      close: () => redis.quit(),
    };
  },
  redlock: async () => {
    const redis = new Redis(redisEndpoint());
    const redlock = new Redlock([redis], { retryCount: -1 });
    return {
      lock: async (key) => {
        const lock = await redlock.acquire([key], 30000);
        return () => lock.release();
      },
      close: () => redis.quit(),
    };
  },
  'advisory-lock': async () => {
    const createMutex = advisoryLock(postgresUrl());
    const mutexes = new Map();
    return {
      lock: async (key) => {
        if (!mutexes.has(key)) mutexes.set(key, createMutex(key));
        return mutexes.get(key).lock();
      },
      close: async () => {},
    };
  },
};

// async-mutex is in-process only: its clients are async tasks sharing mutexes.
const sharedAsyncMutexes = new Map();
peers['async-mutex'] = async () => ({
  lock: async (key) => {
    if (!sharedAsyncMutexes.has(key)) sharedAsyncMutexes.set(key, new AsyncMutex());
    return sharedAsyncMutexes.get(key).acquire();
  },
  close: async () => {},
});
const inProcess = (peer) => peer === 'async-mutex';

// --- one client's loop --------------------------------------------------------

async function clientLoop(client, key, startNs, stopNs) {
  while (nowNs() < startNs) await new Promise((resolve) => setImmediate(resolve));
  const waits = [];
  while (nowNs() < stopNs) {
    const asked = nowNs();
    const release = await client.lock(key);
    waits.push(Number(nowNs() - asked) / 1000);
    await release();
  }
  return waits;
}

const keyFor = (oneKey, index) => keyBase + (oneKey ? 'contended' : `own-${index}`);

function nextMessage(child, field) {
  return new Promise((resolve, reject) => {
    const onMessage = (message) => {
      if (message[field] === undefined) return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(message);
    };
    const onExit = (code) => reject(new Error(`a client exited with ${code} before sending ${field}`));
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

function percentile(values, p) {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(p * (sorted.length - 1))];
}

async function contention(peer, workers, oneKey, seconds) {
  let perClient;
  const startNs = nowNs() + 200_000_000n;  // 200 ms for every client to see it
  const stopNs = startNs + BigInt(Math.round(seconds * 1e9));
  if (inProcess(peer)) {
    // Every task starts in the same tick: a task spinning on the clock
    // would run its whole loop in microtasks before the others begin.
    const clients = await Promise.all(Array.from({ length: workers }, (_, i) => peers[peer](i)));
    await new Promise((resolve) => setTimeout(resolve, Number((startNs - nowNs()) / 1_000_000n)));
    perClient = await Promise.all(clients.map((client, i) => clientLoop(client, keyFor(oneKey, i), 0n, stopNs)));
  } else {
    const children = Array.from({ length: workers }, (_, i) =>
      fork(here, ['--child', 'contention', peer, String(i), oneKey ? 'one' : 'distinct']));
    await Promise.all(children.map((child) => nextMessage(child, 'ready')));
    const results = children.map((child) => nextMessage(child, 'waits'));
    const start = nowNs() + 50_000_000n;
    children.forEach((child) => child.send({ startNs: String(start), stopNs: String(start + (stopNs - startNs)) }));
    perClient = (await Promise.all(results)).map((message) => message.waits);
  }
  const counts = perClient.map((waits) => waits.length);
  const waits = perClient.flat();
  const total = counts.reduce((a, b) => a + b, 0);
  const squares = counts.reduce((a, b) => a + b * b, 0);
  const median = percentile(waits, 0.5);
  const longest = percentile(waits, 1);
  print({
    benchmark: 'contention', backend: backendOf(peer), client: peer, workers, keys: oneKey ? 'one' : 'distinct',
    seconds, acquisitions: total, pairs_per_s: Math.round(total / seconds),
    acquire_p50_us: round1(median), acquire_p99_us: round1(percentile(waits, 0.99)), acquire_max_us: round1(longest),
    max_over_median: median > 0 ? round2(longest / median) : 0,
    per_client_min: Math.min(...counts), per_client_max: Math.max(...counts),
    jain: squares > 0 ? Math.round((total * total) / (counts.length * squares) * 1000) / 1000 : 0,
  });
}

async function handoff(peer, handoffs) {
  const [holder, waiter] = ['holder', 'waiter'].map((role, i) => fork(here, ['--child', role, peer, String(i), 'one']));
  await Promise.all([holder, waiter].map((child) => nextMessage(child, 'ready')));
  const latencies = [];
  for (let i = 0; i < handoffs; ++i) {
    holder.send({ acquire: true });
    await nextMessage(holder, 'holding');
    const waited = nextMessage(waiter, 'holding');
    waiter.send({ acquire: true });
    holder.send({ release: true });
    const released = await nextMessage(holder, 'released');
    const acquired = await waited;
    latencies.push(Number(BigInt(acquired.at) - BigInt(released.at)) / 1000);
    waiter.send({ release: true });
    await nextMessage(waiter, 'released');
  }
  holder.send({ exit: true });
  waiter.send({ exit: true });
  print({
    benchmark: 'handoff_latency', backend: backendOf(peer), client: peer, scope: 'processes', samples: handoffs,
    p10_us: round1(percentile(latencies, 0.1)), p25_us: round1(percentile(latencies, 0.25)),
    p50_us: round1(percentile(latencies, 0.5)), p75_us: round1(percentile(latencies, 0.75)),
    p90_us: round1(percentile(latencies, 0.9)), p99_us: round1(percentile(latencies, 0.99)),
    max_us: round1(percentile(latencies, 1)),
  });
}

function backendOf(peer) {
  return { 'redis-semaphore': 'redis', redlock: 'redis', 'advisory-lock': 'postgres', 'async-mutex': 'memory' }[peer];
}
const round1 = (x) => Math.round(x * 10) / 10;
const round2 = (x) => Math.round(x * 100) / 100;
const print = (line) => console.log(JSON.stringify(line));

async function main() {
  const chosen = option('--peers', 'async-mutex,redis-semaphore,redlock,advisory-lock').split(',').filter(Boolean);
  const workerCounts = option('--workers', smoke ? '1,2' : '1,2,4,8,16').split(',').map(Number);
  const keyModes = option('--keys', 'one,distinct').split(',').filter(Boolean);
  const seconds = Number(option('--seconds', smoke ? '0.2' : '2'));
  const handoffs = Number(option('--handoffs', smoke ? '5' : '300'));
  for (const peer of chosen) {
    if (!peers[peer]) fail(`unknown peer '${peer}' (async-mutex, redis-semaphore, redlock, advisory-lock)`);
    for (const keys of keyModes) {
      if (keys !== 'one' && keys !== 'distinct') fail(`--keys takes one and/or distinct, not '${keys}'`);
      for (const workers of workerCounts) {
        if (!(workers >= 1 && workers <= 16)) fail(`--workers takes 1 to 16, not ${workers}`);
        if (keys === 'distinct' && workers === 1) continue;
        await contention(peer, workers, keys === 'one', seconds);
      }
    }
    if (!inProcess(peer) && handoffs > 0) await handoff(peer, handoffs);
  }
}

// --- child processes ----------------------------------------------------------

if (process.argv[2] === '--child') {
  const [, , , role, peer, indexText, oneKeyText] = process.argv;
  const index = Number(indexText);
  const client = await peers[peer](index);
  if (role === 'contention') {
    process.send({ ready: true });
    process.once('message', async ({ startNs, stopNs }) => {
      const waits = await clientLoop(client, keyFor(oneKeyText === 'one', index), BigInt(startNs), BigInt(stopNs));
      await client.close();
      process.send({ waits }, () => process.exit(0));
    });
  } else {
    // handoff: 'holder' or 'waiter', driven step by step by the parent.
    const key = `${keyBase}handoff`;
    let release = null;
    process.on('message', async (step) => {
      if (step.acquire) {
        release = await client.lock(key);
        process.send({ holding: true, at: String(nowNs()) });
      } else if (step.release) {
        await new Promise((resolve) => setTimeout(resolve, 3));  // the waiter is now waiting
        const at = String(nowNs());
        await release();
        process.send({ released: true, at });
      } else if (step.exit) {
        await client.close();
        process.exit(0);
      }
    });
    process.send({ ready: true });
  }
} else {
  await main();
}
