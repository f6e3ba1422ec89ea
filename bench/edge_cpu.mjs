// CPU time the Berth Worker spends per request, measured inside the Worker's V8 isolate with
// the CPU profiler of the inspector that `wrangler dev --inspector-port` exposes (Chrome DevTools
// Protocol). Workers bill CPU time of the isolate; the sampled time outside "(idle)" is that:
// Rust compiled to wasm, the JS glue, GC. "(program)" (V8 internals not attributed to a
// function) is reported separately. Local R2/KV run in other workers and are not counted.
//
//   node bench/edge_cpu.mjs INSPECTOR_PORT URL REPO
// REPO must hold the tag `v1` (bench/edge.sh pushes it). Prints JSON.
import { createRequire } from "node:module";
import { createHash, randomBytes } from "node:crypto";
const require = createRequire(import.meta.url);
const WebSocket = require(process.env.WS_MODULE);

const [inspectorPort, url, repo] = process.argv.slice(2);
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
  const name = new Map(nodes.map((n) => [n.id, n.callFrame.functionName]));
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

// Warm up (first requests compile the wasm).
for (let i = 0; i < 20; i++) await (await fetch(`${url}/v2/${repo}/manifests/v1`, { headers: { accept } })).arrayBuffer();

const get = await profiled(async () => {
  for (let i = 0; i < manifestGets; i++) {
    const r = await fetch(`${url}/v2/${repo}/manifests/v1`, { headers: { accept } });
    await r.arrayBuffer();
    if (r.status !== 200) throw new Error(`manifest GET: ${r.status}`);
  }
});

// One upload the way docker sends it: a streamed PATCH (no Content-Length), then the PUT.
const chunk = randomBytes(1024 * 1024);
const hash = createHash("sha256");
for (let i = 0; i < uploadMiB; i++) hash.update(chunk);
const digest = "sha256:" + hash.digest("hex");
const up = await profiled(async () => {
  const start = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: "POST" });
  const location = start.headers.get("location");
  let sent = 0;
  const body = new ReadableStream({
    pull(c) { if (sent++ < uploadMiB) c.enqueue(new Uint8Array(chunk)); else c.close(); },
  });
  const patch = await fetch(`${url}${location}`, { method: "PATCH", body, duplex: "half" });
  if (patch.status !== 202) throw new Error(`PATCH: ${patch.status} ${await patch.text()}`);
  const put = await fetch(`${url}${patch.headers.get("location")}?digest=${digest}`, { method: "PUT" });
  if (put.status !== 201) throw new Error(`PUT: ${put.status} ${await put.text()}`);
});
ws.close();
const r = (x) => Math.round(x * 1000) / 1000;
console.log(JSON.stringify({
  manifest_gets: manifestGets,
  cpu_ms_per_manifest_get: r(get.busy / manifestGets),
  program_ms_per_manifest_get: r(get.program / manifestGets),
  upload_mib: uploadMiB,
  cpu_ms_per_upload_mib: r(up.busy / uploadMiB),
  program_ms_per_upload_mib: r(up.program / uploadMiB),
}));
