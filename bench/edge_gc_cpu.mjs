// CPU time of one garbage collection invocation (the Cron Trigger's `scheduled` handler) of the
// Berth Worker, measured as bench/edge_cpu.mjs measures requests: the V8 isolate's CPU profiler
// through `wrangler dev --inspector-port` (Chrome DevTools Protocol), sampled time outside
// "(idle)"; "(program)" separately. Local R2/KV run in other workers and are not counted.
//
//   node bench/edge_gc_cpu.mjs INSPECTOR_PORT URL WRANGLER_LOG
// Fires /__scheduled (wrangler dev --test-scheduled) and stops the profiler once the Worker's
// log shows the run's report (`berth: garbage collection: {...}`). Prints JSON: the sampled
// milliseconds and the report.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
const require = createRequire(import.meta.url);
const WebSocket = require(process.env.WS_MODULE);

const [inspectorPort, url, log] = process.argv.slice(2);
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

const reports = () => [...readFileSync(log, "utf8").matchAll(/berth: garbage collection: (\{.*\})/g)].map((m) => JSON.parse(m[1]));

async function invocation() {
  const before = reports().length;
  await send("Profiler.enable");
  await send("Profiler.setSamplingInterval", { interval: 100 });
  await send("Profiler.start");
  const t0 = Date.now();
  const r = await fetch(`${url}/__scheduled?cron=17+*+*+*+*`);
  await r.arrayBuffer();
  if (r.status !== 200) throw new Error(`/__scheduled: ${r.status}`);
  let report;
  for (let i = 0; i < 600 && !report; i++) {
    const all = reports();
    if (all.length > before) report = all[all.length - 1];
    else await new Promise((ok) => setTimeout(ok, 50));
  }
  const wall = Date.now() - t0;
  const { result } = await send("Profiler.stop");
  if (!report) throw new Error("no garbage collection report in the Worker's log");
  const { nodes, samples, timeDeltas } = result.profile;
  const name = new Map(nodes.map((n) => [n.id, n.callFrame.functionName]));
  const ms = { busy: 0, program: 0 };
  samples.forEach((id, i) => {
    const dt = (timeDeltas[i] || 0) / 1000;
    const f = name.get(id);
    if (f === "(program)") ms.program += dt; else if (f !== "(idle)") ms.busy += dt;
  });
  const round = (x) => Math.round(x * 10) / 10;
  return { cpu_ms: round(ms.busy), program_ms: round(ms.program), wall_ms: wall, report };
}

// The first does the work; the second finds nothing to do (the fixed cost of a run).
const first = await invocation();
const second = await invocation();
ws.close();
console.log(JSON.stringify({ first, second }));
