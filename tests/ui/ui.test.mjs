// Browser tests of the web interface (playwright-core driving Debian's chromium) against a
// `berth serve` that tests/ui/run.sh started and filled with skopeo. Run by run.sh:
//   node ui.test.mjs open   REG INDEX_DIGEST SIG_DIGEST SHOTS_DIR   (auth off)
//   node ui.test.mjs auth   REG                                     (auth on; ALICE_PW, BOB_PW)
// Prints `--- PASS name` / `--- FAIL name` per test; exits non-zero on any failure.
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";

const require = createRequire(new URL("../../web/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [mode, REG, INDEX, SIG, SHOTS] = process.argv.slice(2);
const BASE = `http://${REG}`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
let failed = 0;

async function test(name, fn, contextOptions = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, ...contextOptions });
  context.setDefaultTimeout(10000);
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("dialog", (d) => d.accept());
  try {
    await fn(page, context);
    // Expected API refusals log "Failed to load resource"; anything else (a CSP violation, an
    // exception) fails the test.
    const bad = problems.filter((p) => !/Failed to load resource/.test(p));
    assert.deepEqual(bad, [], "browser console errors");
    console.log(`--- PASS ${name}`);
  } catch (e) {
    failed++;
    console.log(`--- FAIL ${name}\n${e.stack ?? e}`);
    if (SHOTS) await page.screenshot({ path: `${process.env.WORK ?? "/tmp"}/fail-${name}.png` }).catch(() => {});
  } finally {
    await context.close();
  }
}

const shot = (page, name) => SHOTS ? page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true }) : null;
const listTags = (repo) => JSON.parse(execFileSync("skopeo", [
  "list-tags", "--tls-verify=false", ...(mode === "auth" ? ["--creds", `alice:${process.env.ALICE_PW}`] : []), `docker://${REG}/${repo}`,
])).Tags;

if (mode === "open") {
  await test("root-redirect-and-headers", async (page) => {
    const res = await page.goto(`${BASE}/`);
    assert.equal(new URL(page.url()).pathname, "/ui/");
    const h = res.headers();
    assert.match(h["content-security-policy"], /frame-ancestors 'none'/);
    assert.doesNotMatch(h["content-security-policy"], /unsafe-inline/);
    assert.equal(h["x-content-type-options"], "nosniff");
    assert.equal(h["referrer-policy"], "no-referrer");
    // The registry API is unchanged next to it.
    assert.equal((await page.request.get(`${BASE}/v2/`)).status(), 200);
  });

  await test("find-a-repository-among-many", async (page) => {
    await page.goto(`${BASE}/ui/`);
    const list = page.getByRole("list", { name: "Repositories" });
    await list.getByRole("link").first().waitFor();
    assert.equal(await list.getByRole("link").count(), 50, "first catalog page of n=50");
    await page.getByRole("button", { name: "Next page" }).click();
    await list.getByRole("link", { name: "many/app-059" }).waitFor();
    await shot(page, "repositories");
    await page.getByRole("button", { name: "Previous page" }).click();
    await page.getByLabel("Search by name").fill("app-042");
    await page.getByRole("button", { name: "Search" }).click();
    await page.waitForFunction(() => document.querySelectorAll("ul.list a").length === 1);
    await list.getByRole("link", { name: "many/app-042" }).click();
    await page.getByRole("heading", { name: "many/app-042" }).waitFor();
    await page.getByRole("cell", { name: "v1", exact: true }).waitFor();
  });

  await test("multi-platform-index-layers-referrer-copy", async (page, context) => {
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
    await page.goto(`${BASE}/ui/#/r/demo/multi@v1`);
    await page.getByRole("heading", { name: "Platforms" }).waitFor();
    await page.getByRole("link", { name: "linux/arm64" }).waitFor();
    await page.getByText(INDEX).first().waitFor();
    // The size of an index counts its platforms' manifests, configs and layers.
    const total = Number(process.env.INDEX_TOTAL);
    await page.getByText(`${(total / 1024).toFixed(1)} KiB`, { exact: true }).waitFor();
    // The signature referrer, grouped under its artifact type.
    await page.getByRole("heading", { name: /application\/vnd\.dev\.cosign\.simplesigning\.v1\+json/ }).waitFor();
    await page.getByRole("link", { name: SIG }).waitFor();
    await page.getByRole("button", { name: "Copy pull command by digest" }).click();
    await page.getByText("Copied").waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), `docker pull ${REG}/demo/multi@${INDEX}`);
    await page.getByRole("button", { name: "Copy pull command by tag" }).click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), `docker pull ${REG}/demo/multi:v1`);
    await shot(page, "index");
    await page.getByRole("link", { name: "linux/amd64" }).click();
    const layers = page.getByRole("table", { name: "Layers" });
    await layers.waitFor();
    assert.equal(await layers.locator("tbody tr").count(), 2);
    await layers.getByText("application/vnd.oci.image.layer.v1.tar+gzip").first().waitFor();
    await page.getByText('["/bin/hello"]').waitFor();
    await page.getByText("ARCH=amd64").waitFor();
    await page.getByText("org.opencontainers.image.source=https://example.com/berth-ui-test").waitFor();
    await page.getByText("COPY hello.txt /").waitFor();
    await shot(page, "image");
  });

  await test("delete-a-tag", async (page) => {
    assert.ok(listTags("demo/multi").includes("old"), "fixture tag present before");
    await page.goto(`${BASE}/ui/#/r/demo/multi`);
    const table = page.getByRole("table", { name: "Tags of demo/multi" });
    await table.getByRole("cell", { name: "old", exact: true }).waitFor();
    await page.getByRole("button", { name: "Delete tag old" }).click(); // confirm() accepted
    await page.getByText("Deleted tag old.").waitFor();
    // The list reloads from the registry: old goes, v1 stays.
    await table.getByRole("cell", { name: "old", exact: true }).waitFor({ state: "detached" });
    await table.getByRole("cell", { name: "v1", exact: true }).waitFor();
    const tags = listTags("demo/multi");
    assert.ok(!tags.includes("old") && tags.includes("v1"), `skopeo list-tags: ${tags}`);
  });

  await test("delete-a-manifest", async (page) => {
    await page.goto(`${BASE}/ui/#/r/many/app-000@v1`);
    await page.getByRole("heading", { name: "Layers" }).waitFor();
    await page.getByRole("button", { name: "Delete manifest" }).click(); // confirm() accepted
    await page.getByRole("heading", { name: "many/app-000" }).waitFor();
    await page.getByText("No tags.").waitFor();
    assert.deepEqual(listTags("many/app-000"), []);
  });

  await test("tag-pages", async (page) => {
    await page.goto(`${BASE}/ui/#/r/demo/many-tags`);
    const table = page.getByRole("table", { name: "Tags of demo/many-tags" });
    await table.getByRole("cell", { name: "t00", exact: true }).waitFor();
    assert.equal(await table.locator("tbody tr").count(), 50);
    await page.getByRole("button", { name: "Next tags" }).click();
    await table.getByRole("cell", { name: "t54", exact: true }).waitFor();
    assert.equal(await table.locator("tbody tr").count(), 5);
    await page.getByRole("button", { name: "Previous tags" }).click();
    await table.getByRole("cell", { name: "t00", exact: true }).waitFor();
  });

  // The tag names of a table, top to bottom.
  const tagOrder = (table) => table.locator("tbody tr td:first-child a").allTextContents();

  await test("sort-tags-by-push-time", async (page) => {
    await page.goto(`${BASE}/ui/#/r/demo/timed`);
    const table = page.getByRole("table", { name: "Tags of demo/timed" });
    await table.getByRole("cell", { name: "c-third", exact: true }).waitFor();
    assert.deepEqual(await tagOrder(table), ["a-second", "b-first", "c-third"], "by name");
    // Push times are shown (the fixture pushed them a second apart, just now).
    assert.equal(await table.getByText(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/).count(), 3);
    await page.getByLabel("Sort by").selectOption("pushed");
    await page.waitForFunction(() => document.querySelector("tbody tr td a")?.textContent === "c-third");
    assert.deepEqual(await tagOrder(table), ["c-third", "a-second", "b-first"], "newest push first");
    await page.getByLabel("Sort by").selectOption("name");
    await page.waitForFunction(() => document.querySelector("tbody tr td a")?.textContent === "a-second");
  });

  await test("storage-use-with-auth-off", async (page) => {
    await page.goto(`${BASE}/ui/`);
    const table = page.getByRole("table", { name: "Storage use per namespace" });
    await table.getByRole("cell", { name: "demo", exact: true }).waitFor();
    await table.getByRole("cell", { name: "1.0 GiB", exact: true }).waitFor();
    assert.notEqual(await table.locator("tbody tr td").nth(2).textContent(), "0 B", "demo holds images");
    // Auth off, every caller may see webhooks; none are configured here.
    await page.getByRole("region", { name: "Webhooks" }).getByText("No webhooks configured").waitFor();
    await page.getByRole("region", { name: "Replication" }).getByText("No replication rules configured").waitFor();
  });

  await test("retention-preview", async (page) => {
    await page.goto(`${BASE}/ui/#/r/ret/app`);
    const policies = page.getByRole("region", { name: "Policies" });
    await policies.getByText(/keeps the last 1 tags pushed \(retention rule 2\)/).waitFor();
    // keep_last = 1: the older tag goes; the manifest stays (the newer tag names it).
    await policies.getByText("Retention would delete now: tags old.").waitFor();
    assert.deepEqual(listTags("ret/app").sort(), ["new", "old"], "the preview deleted nothing");
  });

  await test("phone-and-dark", async (page) => {
    await page.goto(`${BASE}/ui/#/r/demo/multi@v1`);
    await page.getByRole("heading", { name: "Platforms" }).waitFor();
    await page.getByRole("link", { name: SIG }).waitFor(); // the long artifact type is on the page
    // isMobile widens the layout viewport to fit overflowing content: compare with the screen.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - 380);
    assert.ok(overflow <= 1, `page wider than the phone screen by ${overflow}px`);
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, "rgb(13, 17, 23)", "dark background");
    await shot(page, "index-phone-dark");
  }, { viewport: { width: 380, height: 800 }, colorScheme: "dark", isMobile: true });

  await test("errors-say-what-failed", async (page) => {
    await page.goto(`${BASE}/ui/#/r/demo/multi@nope`);
    await page.getByRole("alert").getByText(/manifest demo\/multi:nope: 404 MANIFEST_UNKNOWN/).waitFor();
  });

  await test("registry-gone-says-so", async (page, context) => {
    await page.goto(`${BASE}/ui/#/r/demo/multi`);
    await page.getByRole("cell", { name: "v1", exact: true }).waitFor();
    await context.setOffline(true);
    await page.goto(`${BASE}/ui/#/r/demo/multi@v1`).catch(() => {}); // same page, new hash
    await page.getByRole("alert").getByText(/manifest demo\/multi:v1: no answer from the registry/).waitFor();
  });

  await test("keyboard-navigation", async (page) => {
    await page.goto(`${BASE}/ui/#/r/demo/multi`);
    await page.getByRole("cell", { name: "v1", exact: true }).waitFor();
    for (let i = 0; i < 30; i++) {
      await page.keyboard.press("Tab");
      if (await page.evaluate(() => document.activeElement?.textContent === "v1")) break;
    }
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "demo/multi:v1" }).waitFor();
  });

  // Last: a delete that went through would take the fixture of the tests above.
  await test("immutable-tag-shows-and-refuses-delete", async (page) => {
    await page.goto(`${BASE}/ui/#/r/demo/multi`);
    const table = page.getByRole("table", { name: "Tags of demo/multi" });
    const v1 = table.locator("tbody tr").filter({ has: page.getByRole("link", { name: "v1", exact: true }) });
    await v1.waitFor();
    await v1.getByText("immutable").waitFor();
    assert.equal(await page.getByRole("button", { name: "Delete tag v1" }).count(), 0, "no delete for an immutable tag");
    await page.getByRole("button", { name: "Delete tag single" }).waitFor(); // a mutable one keeps it
    const single = table.locator("tbody tr").filter({ has: page.getByRole("link", { name: "single", exact: true }) });
    assert.equal(await single.getByText("immutable").count(), 0);
    // The policies that apply, from the registry's config.
    const policies = page.getByRole("region", { name: "Policies" });
    await policies.getByText(/Tags matching v1 never move and are never deleted \(immutable_tags rule 1\)/).waitFor();
    await policies.getByText(/Tags matching latest cannot be pushed here \(refused_tags rule 1\): push a version tag/).waitFor();
    await policies.getByText(/keeps the last 100 tags pushed \(retention rule 1\)/).waitFor();
    await policies.getByText("Retention would delete: nothing.").waitFor();
    // Every size loaded (a cell shows "…" until then).
    await page.waitForFunction(() => ![...document.querySelectorAll("td")].some((td) => td.textContent === "…"));
    await shot(page, "tags");
    // Deleting the manifest v1 names: the registry's 403 is what the page shows.
    await page.goto(`${BASE}/ui/#/r/demo/multi@v1`);
    await page.getByRole("button", { name: "Delete manifest" }).click(); // confirm() accepted
    await page.getByRole("status").getByText(/Failed: delete demo\/multi@sha256:[0-9a-f]{64}: 403 DENIED: .*immutable tag v1 points at it/).waitFor();
    assert.ok(listTags("demo/multi").includes("v1"));
  });
} else if (mode === "auth") {
  const login = async (page, user, pw) => {
    await page.goto(`${BASE}/ui/#/login`);
    await page.getByLabel("User or robot name").fill(user);
    await page.getByLabel("Password or secret").fill(pw);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByText(`Signed in as ${user}`).waitFor();
  };

  await test("anonymous-sees-only-public", async (page) => {
    await page.goto(`${BASE}/ui/`);
    // The catalog is refused: the list is what anonymous callers may pull.
    await page.getByText(/Only the repositories you may pull are listed/).waitFor();
    await page.getByRole("link", { name: "public/app" }).waitFor();
    assert.equal(await page.getByRole("link", { name: "team/secret" }).count(), 0);
    await page.getByLabel("Open a repository by name").fill("public/app");
    await page.getByRole("button", { name: "Open" }).click();
    await page.getByRole("cell", { name: "v1", exact: true }).waitFor();
    assert.equal(await page.getByRole("button", { name: /Delete/ }).count(), 0, "no delete for anonymous");
    await shot(page, "anonymous-public");
    // Storage use needs the catalog right: not shown to anonymous visitors.
    await page.goto(`${BASE}/ui/`);
    await page.getByRole("region", { name: "Storage use per namespace" }).getByText("Shown to those who may list every repository (the catalog right).").waitFor();
    assert.equal(await page.getByRole("table", { name: "Storage use per namespace" }).count(), 0);
    await page.getByRole("region", { name: "Webhooks" }).getByText("Shown to those who may list every repository (the catalog right).").waitFor();
    assert.equal(await page.getByRole("table", { name: "Webhook endpoints" }).count(), 0, "webhooks need the catalog right");
    await page.getByRole("region", { name: "Replication" }).getByText("Shown to those who may list every repository (the catalog right).").waitFor();
    assert.equal(await page.getByRole("table", { name: "Replication rules" }).count(), 0, "replication needs the catalog right");
    await page.goto(`${BASE}/ui/#/r/team/secret`);
    await page.getByRole("alert").getByText(/tags of team\/secret: 401/).waitFor();
    assert.equal(await page.getByRole("cell", { name: "v1", exact: true }).count(), 0);
  });

  await test("reader-has-no-delete-and-forged-delete-is-403", async (page) => {
    await login(page, "bob", process.env.BOB_PW);
    // bob may not list the catalog: the list is what he may pull, team/secret included.
    await page.goto(`${BASE}/ui/#/`);
    await page.getByRole("link", { name: "team/secret" }).waitFor();
    await page.getByText(/Only the repositories you may pull are listed/).waitFor();
    await page.goto(`${BASE}/ui/#/r/team/secret`);
    await page.getByRole("cell", { name: "v1", exact: true }).waitFor();
    assert.equal(await page.getByRole("button", { name: /Delete/ }).count(), 0, "no delete button for bob");
    // bob may pull team/** but not list the catalog: no storage use either.
    await page.goto(`${BASE}/ui/#/`);
    await page.getByRole("region", { name: "Storage use per namespace" }).getByText("Shown to those who may list every repository (the catalog right).").waitFor();
    assert.equal(await page.getByRole("table", { name: "Storage use per namespace" }).count(), 0);
    // A forged delete with bob's best token: the API refuses it.
    const status = await page.evaluate(async (realm) => {
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: sessionStorage.getItem("berth.refresh"), service: "berth", scope: "repository:team/secret:pull,delete" });
      const { token } = await (await fetch(realm, { method: "POST", body: form })).json();
      const res = await fetch("/v2/team/secret/manifests/v1", { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
      return res.status;
    }, `${BASE}/token`);
    assert.equal(status, 403);
    assert.ok(listTags("team/secret").includes("v1"));
    // No cookie carries the login.
    assert.deepEqual(await page.context().cookies(), []);
  });

  await test("writer-lists-and-deletes", async (page) => {
    await login(page, "alice", process.env.ALICE_PW);
    await page.goto(`${BASE}/ui/#/`);
    // alice holds the catalog right: she sees storage use per namespace.
    const storage = page.getByRole("table", { name: "Storage use per namespace" });
    await storage.getByRole("cell", { name: "team", exact: true }).waitFor();
    const used = await storage.locator("tbody tr td").nth(2).textContent();
    assert.ok(used && used !== "0 B", `team's usage: ${used}`);
    await shot(page, "storage-admin");
    // And the webhook endpoint with the deliveries that failed (the receiver is never there;
    // the delivery task runs every second, so reload until they are in).
    const hooks = page.getByRole("region", { name: "Webhooks" });
    await hooks.getByRole("table", { name: "Webhook endpoints" }).getByRole("cell", { name: "http://127.0.0.1:9/hook" }).waitFor();
    assert.equal(await hooks.getByText("ui-test-secret").count(), 0, "the secret is never shown");
    const failedRows = hooks.getByRole("table", { name: "Failed deliveries" }).locator("tbody tr");
    for (let i = 0; i < 20 && (await failedRows.count()) === 0; i++) {
      await page.waitForTimeout(500);
      await page.reload();
      await hooks.getByRole("table", { name: "Webhook endpoints" }).waitFor();
    }
    const row = failedRows.filter({ hasText: "team/secret" }).first();
    await row.getByRole("cell", { name: "push", exact: true }).waitFor();
    // The error as the runtime's HTTP client words it: reqwest's names the refusal, the
    // Worker's fetch error is prefixed with the URL.
    assert.match(await row.textContent(), /UTCcipushteam\/secret1.*(Connection refused|127\.0\.0\.1:9)/);
    await shot(page, "webhooks-admin");
    // And the replication rule, whose destination is never there either: the copy task (every
    // second on serve, the queue wake-up on the Worker) keeps the rule's failed last result.
    const rules = page.getByRole("region", { name: "Replication" }).getByRole("table", { name: "Replication rules" });
    await rules.getByRole("cell", { name: "http://127.0.0.1:9/copies" }).waitFor();
    assert.equal(await page.getByRole("region", { name: "Replication" }).getByText("ui-test-secret").count(), 0);
    const ruleRow = rules.locator("tbody tr").first();
    for (let i = 0; i < 30 && !/failed/.test((await ruleRow.textContent()) ?? ""); i++) {
      await page.waitForTimeout(500);
      await page.reload();
      await rules.waitFor();
    }
    assert.match(await ruleRow.textContent(), /^drhttp:\/\/127\.0\.0\.1:9\/copiesteam\/\*\*on pushfailed \d{4}-.* UTC: team\/secret:(v1|old): ./);
    // The sync rule (pull mode): on serve its first run starts at once and fails (the Worker
    // runs sync rules on its Cron Trigger, which this test does not fire: tests/edge/replication.sh).
    const syncRow = page.getByRole("region", { name: "Replication" }).getByRole("table", { name: "Sync rules" }).locator("tbody tr").first();
    await syncRow.getByRole("cell", { name: "1h", exact: true }).waitFor();
    for (let i = 0; process.env.UI_TARGET !== "worker" && i < 30 && !/failed/.test((await syncRow.textContent()) ?? ""); i++) {
      await page.waitForTimeout(500);
      await page.reload();
      await syncRow.waitFor();
    }
    if (process.env.UI_TARGET !== "worker") assert.match(await syncRow.textContent(), /^hubhttp:\/\/127\.0\.0\.1:9 into hub\/library\/alpine1hfailed \d{4}-.* UTC.*: ./);
    await shot(page, "replication-admin");
    await page.getByRole("link", { name: "team/secret" }).click();
    await page.getByRole("button", { name: "Delete tag old" }).click();
    await page.getByText("Deleted tag old.").waitFor();
    assert.ok(!listTags("team/secret").includes("old"));
    await page.getByRole("button", { name: "Log out" }).click();
    await page.getByRole("link", { name: "Log in" }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("berth.refresh")), null);
  });

  await test("wrong-password-says-so", async (page) => {
    await page.goto(`${BASE}/ui/#/login`);
    await page.getByLabel("User or robot name").fill("alice");
    await page.getByLabel("Password or secret").fill("wrong");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("alert").getByText(/login failed: 401/).waitFor();
  });
}

await browser.close();
console.log(failed ? `${failed} failed` : "all passed");
process.exit(failed ? 1 : 0);
