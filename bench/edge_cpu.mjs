// CPU time the Berth Worker spends per request, measured inside the Worker's V8 isolate with
// the CPU profiler of the inspector that `wrangler dev --inspector-port` exposes (Chrome DevTools
// Protocol). Workers bill CPU time of the isolate; the sampled time outside "(idle)" is that:
// Rust compiled to wasm, the JS glue, GC. "(program)" (V8 internals not attributed to a
// function) is reported separately. Local R2/KV run in other workers and are not counted.
//
//   node bench/edge_cpu.mjs INSPECTOR_PORT URL REPO [TAG]
// REPO must hold TAG (default `v1`; bench/edge.sh pushes it). Prints JSON. GET_PATH: GET this
// path instead of the manifest (bench/edge-peers.sh measures the hello Worker's `/` with it, the
// floor of this instrument: what any Worker answering a GET costs here); UPLOAD_MIB=0: no upload. AUTH_USER/AUTH_PASSWORD:
// see below (bench/edge.sh with EDGE_BENCH_AUTH=1). AUTH_HEADER: a fixed Authorization header
// value sent on every request instead (e.g. `Basic ...` for cloudflare/serverless-registry, which
// bench/edge-peers.sh measures with this same script). Any registry works: the upload Location
// may be absolute or relative and may already carry a query (the peer's `?_stateHash=`).
import { createRequire } from "node:module";
import { createHash, randomBytes } from "node:crypto";
const require = createRequire(import.meta.url);
const WebSocket = require(process.env.WS_MODULE);

const [inspectorPort, url, repo, tag = "v1"] = process.argv.slice(2);
const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json();
const target = targets.find((t) => t.webSocketDebuggerUrl);
const ws = new WebSocket(target.webSocketDebuggerUrl);
await new Promise((ok, fail) => { ws.once("open", ok); ws.once("error", fail); });
let nextId = 1;
const waiting = new Map();
ws.on("message", (m) => {
  const msg = JSON.parse(m);
  if (msg.id && waiting.has(msg.id)) { waiting.get(msg.id)(msg); waiting.delete(msg.id); }
});
const send = (method, params = {}) => new Promise((ok) => {
  const id = nextId++;
  waiting.set(id, ok);
  ws.send(JSON.stringify({ id, method, params }));
});

/** Runs `work` under the profiler; returns sampled milliseconds by category. */
async function profiled(work) {
  await send("Profiler.enable");
  await send("Profiler.setSamplingInterval", { interval: 100 });
  await send("Profiler.start");
  await work();
  const { result } = await send("Profiler.stop");
  const { nodes, samples, timeDeltas } = result.profile;
  // Anonymous functions are told apart by where they are (script, line), for TOP.
  const name = new Map(nodes.map((n) => [n.id, n.callFrame.functionName
    || (n.callFrame.url || n.callFrame.lineNumber >= 0 ? `(anonymous ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber})` : "")]));
  const ms = { busy: 0, program: 0, idle: 0 };
  const self = new Map();
  samples.forEach((id, i) => {
    const dt = (timeDeltas[i] || 0) / 1000;
    const f = name.get(id);
    if (f === "(idle)") ms.idle += dt; else if (f === "(program)") ms.program += dt; else ms.busy += dt;
    self.set(f, (self.get(f) || 0) + dt);
  });
  if (process.env.TOP) {
    // Where the time went, by function (self time), for looking into a figure.
    console.error([...self].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.TOP))
      .map(([f, t]) => `${t.toFixed(1).padStart(9)} ms  ${f || "(anonymous)"}`).join("\n"));
  }
  return ms;
}

const accept = "application/vnd.oci.image.manifest.v1+json";
const manifestGets = Number(process.env.MANIFEST_GETS || 500);
const uploadMiB = Number(process.env.UPLOAD_MIB || 64);

// With AUTH_USER and AUTH_PASSWORD (a Worker with AUTH_CONFIG): every request carries a bearer
// token, and the CPU of TOKEN_GETS password logins at the token endpoint (Argon2id) is measured.
const user = process.env.AUTH_USER, password = process.env.AUTH_PASSWORD;
const tokenGets = Number(process.env.TOKEN_GETS || 20);
const basic = user && "Basic " + Buffer.from(`${user}:${password}`).toString("base64");
const tokenUrl = `${url}/token?service=berth&scope=repository:${repo}:pull,push`;
let headers = process.env.AUTH_HEADER ? { authorization: process.env.AUTH_HEADER } : {};
if (user) {
  const r = await fetch(tokenUrl, { headers: { authorization: basic } });
  if (r.status !== 200) throw new Error(`token: ${r.status} ${await r.text()}`);
  headers = { authorization: `Bearer ${(await r.json()).token}` };
}

const getUrl = `${url}${process.env.GET_PATH || `/v2/${repo}/manifests/${tag}`}`;
// Warm up (first requests compile the wasm).
for (let i = 0; i < 20; i++) await (await fetch(getUrl, { headers: { accept, ...headers } })).arrayBuffer();

const get = await profiled(async () => {
  for (let i = 0; i < manifestGets; i++) {
    const r = await fetch(getUrl, { headers: { accept, ...headers } });
    await r.arrayBuffer();
    if (r.status !== 200) throw new Error(`GET ${getUrl}: ${r.status}`);
  }
});

// One upload the way docker sends it: a streamed PATCH (no Content-Length), then the PUT.
const chunk = randomBytes(1024 * 1024);
const hash = createHash("sha256");
for (let i = 0; i < uploadMiB; i++) hash.update(chunk);
const digest = "sha256:" + hash.digest("hex");
const up = uploadMiB === 0 ? { busy: 0, program: 0 } : await profiled(async () => {
  const start = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: "POST", headers });
  if (start.status !== 202) throw new Error(`POST: ${start.status} ${await start.text()}`);
  const location = start.headers.get("location");
  let sent = 0;
  const body = new ReadableStream({
    pull(c) { if (sent++ < uploadMiB) c.enqueue(new Uint8Array(chunk)); else c.close(); },
  });
  const patch = await fetch(new URL(location, url), { method: "PATCH", body, duplex: "half", headers });
  if (patch.status !== 202) throw new Error(`PATCH: ${patch.status} ${await patch.text()}`);
  const next = patch.headers.get("location");
  const put = await fetch(new URL(`${next}${next.includes("?") ? "&" : "?"}digest=${digest}`, url), { method: "PUT", headers });
  if (put.status !== 201) throw new Error(`PUT: ${put.status} ${await put.text()}`);
});
const logins = user && await profiled(async () => {
  for (let i = 0; i < tokenGets; i++) {
    const r = await fetch(tokenUrl, { headers: { authorization: basic } });
    await r.arrayBuffer();
    if (r.status !== 200) throw new Error(`token GET: ${r.status}`);
  }
});
ws.close();
const r = (x) => Math.round(x * 1000) / 1000;
console.log(JSON.stringify({
  manifest_gets: manifestGets,
  cpu_ms_per_manifest_get: r(get.busy / manifestGets),
  program_ms_per_manifest_get: r(get.program / manifestGets),
  upload_mib: uploadMiB,
  ...(uploadMiB > 0 ? {
    cpu_ms_per_upload_mib: r(up.busy / uploadMiB),
    program_ms_per_upload_mib: r(up.program / uploadMiB),
  } : {}),
  ...(logins ? {
    token_gets: tokenGets,
    cpu_ms_per_password_token_get: r(logins.busy / tokenGets),
    program_ms_per_password_token_get: r(logins.program / tokenGets),
  } : {}),
}));
