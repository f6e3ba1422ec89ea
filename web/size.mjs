// Prints the gzip size of the built assets and fails above the budget (150 KiB).
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET = 150 * 1024;
let total = 0;
const walk = (dir) => readdirSync(dir).forEach((f) => {
  const p = join(dir, f);
  if (statSync(p).isDirectory()) return walk(p);
  const gz = gzipSync(readFileSync(p), { level: 9 }).length;
  total += gz;
  console.log(`  ${p}: ${gz} B gzip`);
});
walk(process.argv[2] ?? "dist");
console.log(`UI assets: ${(total / 1024).toFixed(1)} KiB gzip (budget ${BUDGET / 1024} KiB)`);
if (total > BUDGET) { console.error("over budget"); process.exit(1); }
