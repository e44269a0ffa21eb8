// The filter's request path in V8 without Envoy, for measuring what it runs (bench/footprint/run.sh):
//   node --no-liftoff bench/footprint/fakehost.mjs wasm/jwt_claims_filter.wasm [requests]
// A stand-in for the proxy-wasm host with just the calls the cached path makes: the module is
// started and configured (inline JWKS of the Istio sample, claimHeaders x-jwt-claim.groups),
// then takes 20,000 requests with the sample token to warm up, then [requests] more, timed.
// Every request must be allowed (the token header removed, the claim header added), or it
// stops. A profiling tool, not a test: the end-to-end tests run the module in a real Envoy.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const [, , path, itersArg] = process.argv;
const iters = Number(itersArg || 100000);
const root = fileURLToPath(new URL('../../tests/fixtures/istio-samples/', import.meta.url));
const jwks = readFileSync(root + 'jwks.json', 'utf8');
const token = readFileSync(root + 'groups-scope.jwt', 'utf8').trim();
const config = JSON.stringify({ jwtRules: [{ issuer: 'testing@secure.istio.io', jwks }], claimHeaders: ['x-jwt-claim.groups'] });
const headers = [[':authority', 'httpbin.example.com'], [':path', '/status/200'], [':method', 'GET'], [':scheme', 'http'],
  ['user-agent', 'wrk'], ['accept', '*/*'], ['authorization', 'Bearer ' + token], ['x-forwarded-proto', 'http'],
  ['x-request-id', '5f0e4f7a-1c2b-4c41-9a5e-8d1b2a3c4d5e']];
const enc = new TextEncoder();
function serialize(pairs) {
  const parts = pairs.map(([n, v]) => [enc.encode(n), enc.encode(v)]);
  let size = 4 + 8 * parts.length; for (const [n, v] of parts) size += n.length + v.length + 2;
  const out = new Uint8Array(size); const dv = new DataView(out.buffer);
  dv.setUint32(0, parts.length, true); let o = 4;
  for (const [n, v] of parts) { dv.setUint32(o, n.length, true); dv.setUint32(o + 4, v.length, true); o += 8; }
  for (const [n, v] of parts) { out.set(n, o); o += n.length + 1; out.set(v, o); o += v.length + 1; }
  return out;
}
const wire = serialize(headers);
let ex, mem;
const u8 = () => new Uint8Array(mem.buffer);
const dv = () => new DataView(mem.buffer);
function give(bytes, retData, retSize) {
  const p = ex.proxy_on_memory_allocate(bytes.length);
  u8().set(bytes, p); dv().setUint32(retData, p, true); dv().setUint32(retSize, bytes.length, true); return 0;
}
const nowNs = () => BigInt(Date.now()) * 1000000n;
let removes = 0, adds = 0;
const env = new Proxy({
  proxy_get_header_map_pairs: (t, d, s) => give(wire, d, s),
  proxy_get_buffer_bytes: (t, start, max, d, s) => t === 7 ? give(enc.encode(config), d, s) : 1,
  proxy_get_property: (p, n, d, s) => 1,
  proxy_get_log_level: (r) => { dv().setUint32(r, 2, true); return 0; },
  proxy_log: () => 0,
  proxy_set_tick_period_milliseconds: () => 0,
  proxy_define_metric: (t, n, s, r) => { dv().setUint32(r, 1, true); return 0; },
  proxy_increment_metric: () => 0,
  proxy_get_current_time_nanoseconds: (r) => { dv().setBigUint64(r, nowNs(), true); return 0; },
  proxy_get_shared_data: () => 1,
  proxy_set_shared_data: () => 0,
  proxy_remove_header_map_value: () => { removes++; return 0; },
  proxy_add_header_map_value: () => { adds++; return 0; },
  proxy_replace_header_map_value: () => 0,
  proxy_call_foreign_function: () => 1,
  proxy_send_local_response: (...a) => { throw new Error('local response: the request was denied'); },
}, { get: (o, k) => o[k] || (() => { throw new Error('unexpected host call ' + String(k)); }) });
const wasi = {
  random_get: (p, n) => { const b = u8(); for (let i = 0; i < n; i++) b[p + i] = (Math.random() * 256) | 0; return 0; },
  environ_sizes_get: (a, b) => { dv().setUint32(a, 0, true); dv().setUint32(b, 0, true); return 0; },
  environ_get: () => 0,
  clock_time_get: (id, prec, r) => { dv().setBigUint64(r, nowNs(), true); return 0; },
  fd_write: (fd, iov, n, r) => { dv().setUint32(r, 0, true); return 0; },
  proc_exit: (c) => { throw new Error('exit ' + c); },
};
const { instance } = await WebAssembly.instantiate(readFileSync(path), { env, wasi_snapshot_preview1: wasi });
ex = instance.exports; mem = ex.memory;
ex._initialize?.();
if (!ex.proxy_on_vm_start(1, 0)) throw new Error('vm start refused');
if (!ex.proxy_on_configure(1, config.length)) throw new Error('configure refused');
const run = (n, base) => { for (let i = 0; i < n; i++) if (ex.proxy_on_request_headers(base + i, headers.length, 1) !== 0) throw new Error('paused'); };
run(20000, 2);
removes = adds = 0;
const t0 = process.hrtime.bigint(); run(iters, 100000); const t = Number(process.hrtime.bigint() - t0);
if (removes !== iters || adds !== iters) throw new Error(`removes ${removes} adds ${adds}`);
console.log(`${path.split('/').pop()}: ${(t / iters).toFixed(0)} ns per request (${iters}, every one allowed)`);
