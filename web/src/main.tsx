import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import {
  api, ApiError, apiAsCaller, authEnabled, currentUser, Descriptor, FailedDelivery, formatSize, formatTime, fullSize, getManifest, isIndex,
  login, logout, Manifest, mayDelete, nextLast, policyState, PolicyState, quotaUsage, ReplicationResult, replicationState, retentionPreview, SyncResult,
  tagDetails, webhookState,
} from "./api";

// Hash routes, so the server serves one page for every view:
//   #/                 repositories    #/r/NAME           tags of NAME
//   #/r/NAME@REF       an image        #/login            login form
type Route = { view: "repos" } | { view: "login" } | { view: "tags"; repo: string } | { view: "image"; repo: string; ref: string };

function parseRoute(hash: string): Route {
  const h = decodeURIComponent(hash.replace(/^#\/?/, ""));
  if (h === "login") return { view: "login" };
  if (h.startsWith("r/")) {
    const rest = h.slice(2);
    const at = rest.indexOf("@");
    return at < 0 ? { view: "tags", repo: rest } : { view: "image", repo: rest.slice(0, at), ref: rest.slice(at + 1) };
  }
  return { view: "repos" };
}

const host = location.host;
const errText = (e: unknown) => (e instanceof ApiError || e instanceof Error ? e.message : String(e));

/** Loads with `load`; shows "Loading…", then the result or what failed (never an endless spinner). */
function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data?: T; error?: string; reload: () => void } {
  const [state, setState] = useState<{ data?: T; error?: string }>({});
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    setState({});
    const timeout = new Promise<never>((_, rej) => setTimeout(() => rej(new Error("no answer from the registry within 30 s")), 30000));
    Promise.race([load(), timeout]).then(
      (data) => live && setState({ data }),
      (e) => live && setState({ error: errText(e) }),
    );
    return () => { live = false; };
  }, [...deps, n]);
  return { ...state, reload: () => setN(n + 1) };
}

function Status({ error, loading }: { error?: string; loading: boolean }) {
  if (error) return <p class="error" role="alert">Failed: {error}</p>;
  return loading ? <p aria-live="polite">Loading…</p> : null;
}

function Copy({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone("Copied");
    } catch (e) {
      setDone(`Copy failed: ${errText(e)}`);
    }
  };
  return (
    <div class="copy">
      <code>{text}</code>
      <button type="button" onClick={copy} aria-label={label}>Copy</button>
      <span role="status">{done}</span>
    </div>
  );
}

function Header({ user, onLogout, authOff }: { user: string | null; onLogout: () => void; authOff: boolean }) {
  return (
    <header>
      <a href="#/" class="brand">Berth</a>
      <nav aria-label="Account">
        {user ? (
          <>
            <span>Signed in as <strong>{user}</strong></span>{" "}
            <button type="button" onClick={onLogout}>Log out</button>
          </>
        ) : authOff ? null : (
          <a href="#/login">Log in</a>
        )}
      </nav>
    </header>
  );
}

function Login({ onDone }: { onDone: () => void }) {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const f = e.target as HTMLFormElement;
    const data = new FormData(f);
    setBusy(true);
    setError("");
    try {
      await login(String(data.get("username")), String(data.get("password")));
      onDone();
    } catch (err) {
      setError(errText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main>
      <h1>Log in</h1>
      <form onSubmit={submit} class="login">
        <label for="username">User or robot name</label>
        <input id="username" name="username" autocomplete="username" required />
        <label for="password">Password or secret</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required />
        <button type="submit" disabled={busy}>{busy ? "Logging in…" : "Log in"}</button>
        {error && <p class="error" role="alert">{error}</p>}
      </form>
    </main>
  );
}

const PAGE = 50;

/**
 * One page of repository names: the catalog, or when the caller may not list it (401/403), the
 * ones it may pull (`/v2/_berth/repositories`, same format and pages). `state.filtered` says
 * which, so one load asks the catalog once.
 */
async function repoPage(n: number, last: string, state: { filtered: boolean }): Promise<Response> {
  const q = `?n=${n}${last ? `&last=${encodeURIComponent(last)}` : ""}`;
  if (!state.filtered) {
    try {
      return await api(`/v2/_catalog${q}`, {}, "repository list");
    } catch (e) {
      if (!(e instanceof ApiError && (e.status === 401 || e.status === 403))) throw e;
      state.filtered = true;
    }
  }
  return apiAsCaller(`/v2/_berth/repositories${q}`, "repository list");
}

/** Catalog pages, `n`/`last` as the API gives them; search filters by name (the API has no search). */
function Repos() {
  const [last, setLast] = useState<string[]>([""]); // stack of `last` values: back/next
  const [query, setQuery] = useState("");
  const [openName, setOpenName] = useState("");
  const cursor = last[last.length - 1];
  const page = useLoad(async () => {
    const state = { filtered: false };
    // With a search term, walk the catalog (pages of 1000) and keep the matches.
    if (query) {
      const found: string[] = [];
      let after = "";
      for (let i = 0; i < 100 && found.length < PAGE; i++) {
        const res = await repoPage(1000, after, state);
        const names: string[] = (await res.json()).repositories ?? [];
        found.push(...names.filter((n) => n.includes(query)));
        const next = nextLast(res);
        if (!next || names.length === 0) break;
        after = next;
      }
      return { names: found.slice(0, PAGE), next: null as string | null, filtered: state.filtered };
    }
    const res = await repoPage(PAGE, cursor, state);
    const names: string[] = (await res.json()).repositories ?? [];
    return { names, next: nextLast(res), filtered: state.filtered };
  }, [cursor, query]);
  const denied = page.error && /^repository list: 40[13]/.test(page.error);
  return (
    <main>
      <h1>Repositories</h1>
      <form role="search" onSubmit={(e) => { e.preventDefault(); setQuery(((e.target as HTMLFormElement).elements.namedItem("q") as HTMLInputElement).value.trim()); setLast([""]); }}>
        <label for="q">Search by name</label>
        <input id="q" name="q" type="search" placeholder="team/app" />
        <button type="submit">Search</button>
      </form>
      {denied ? (
        <p class="note" role="alert">
          You may not list the repositories ({page.error}). Open one by name below, or log in.
        </p>
      ) : (
        <Status error={page.error} loading={!page.data} />
      )}
      {page.data && (
        <>
          {page.data.filtered && (
            <p class="note">Only the repositories you may pull are listed.{currentUser() ? "" : " Log in to see more."}</p>
          )}
          {page.data.names.length === 0 && <p>No repositories{query ? ` matching “${query}”` : ""}.</p>}
          <ul class="list" aria-label="Repositories">
            {page.data.names.map((n) => <li key={n}><a href={`#/r/${n}`}>{n}</a></li>)}
          </ul>
          <div class="pager">
            <button type="button" disabled={last.length < 2} onClick={() => setLast(last.slice(0, -1))}>Previous page</button>
            <button type="button" disabled={!page.data.next} onClick={() => setLast([...last, page.data!.next!])}>Next page</button>
          </div>
        </>
      )}
      <form onSubmit={(e) => { e.preventDefault(); if (openName) location.hash = `#/r/${openName.trim()}`; }}>
        <label for="open">Open a repository by name</label>
        <input id="open" value={openName} onInput={(e) => setOpenName((e.target as HTMLInputElement).value)} placeholder="public/app" />
        <button type="submit">Open</button>
      </form>
      <StorageUse />
      <WebhooksPanel />
      <ReplicationPanel />
    </main>
  );
}

/** Storage use per namespace (quota usage), for whoever may see it: the catalog right. */
function StorageUse() {
  const usage = useLoad(quotaUsage, []);
  return (
    <section aria-labelledby="storage">
      <h2 id="storage">Storage use per namespace</h2>
      <Status error={usage.error} loading={usage.data === undefined && !usage.error} />
      {usage.data === null && <p class="note">Shown to those who may list every repository (the catalog right).</p>}
      {usage.data && usage.data.length === 0 && <p>No quotas are configured: storage is counted per quota namespace (docs/quotas.md).</p>}
      {usage.data && usage.data.length > 0 && (
        <table aria-label="Storage use per namespace">
          <thead><tr><th scope="col">Namespace</th><th scope="col">Repositories</th><th scope="col">Used</th><th scope="col">Limit</th><th scope="col">Share</th></tr></thead>
          <tbody>
            {usage.data.map((q) => {
              const share = q.limit > 0 ? Math.min(100, (100 * q.used) / q.limit) : 0;
              return (
                <tr key={q.name}>
                  <td>{q.name}</td>
                  <td><code>{q.repositories.join(", ")}</code></td>
                  <td>{formatSize(q.used)}</td>
                  <td>{formatSize(q.limit)}</td>
                  <td><meter min={0} max={100} value={share} aria-label={`${q.name}: ${share.toFixed(1)}% of the limit`} /> {share.toFixed(1)}%</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** Webhook endpoints and failed deliveries, for whoever may see them: the catalog right. */
function WebhooksPanel() {
  const hooks = useLoad(webhookState, []);
  const d = hooks.data;
  return (
    <section aria-labelledby="hooks">
      <h2 id="hooks">Webhooks</h2>
      <Status error={hooks.error} loading={d === undefined && !hooks.error} />
      {d === null && <p class="note">Shown to those who may list every repository (the catalog right).</p>}
      {d && d.endpoints.length === 0 && <p>No webhooks configured (docs/webhooks.md).</p>}
      {d && d.endpoints.length > 0 && (
        <>
          <table aria-label="Webhook endpoints">
            <thead><tr><th scope="col">Endpoint</th><th scope="col">URL</th><th scope="col">Events</th><th scope="col">Repositories</th></tr></thead>
            <tbody>
              {d.endpoints.map((e) => (
                <tr key={e.name}><td>{e.name}</td><td><code>{e.url}</code></td><td>{e.events.join(", ")}</td><td><code>{e.repositories.join(", ")}</code></td></tr>
              ))}
            </tbody>
          </table>
          <p>{d.pending}{d.morePending ? "+" : ""} deliveries pending; {d.failed.length}{d.moreFailed ? "+" : ""} failed.</p>
          <FailedEntries label="Failed deliveries" owner="Endpoint" entries={d.failed} />
          {d.moreFailed && <p class="note">The first 100 failed deliveries are shown; <code>berth webhooks failed</code> lists them all.</p>}
        </>
      )}
    </section>
  );
}

/** Outbox entries kept as failed after their last attempt: webhook deliveries (owner: the
 *  endpoint) or replication copies (owner: the rule). Nothing when there are none. */
function FailedEntries({ label, owner, entries }: { label: string; owner: string; entries: FailedDelivery[] }) {
  if (entries.length === 0) return null;
  return (
    <table aria-label={label}>
      <thead><tr><th scope="col">Time</th><th scope="col">{owner}</th><th scope="col">Event</th><th scope="col">Repository</th><th scope="col">Attempts</th><th scope="col">Last error</th></tr></thead>
      <tbody>
        {entries.map((f) => (
          <tr key={f.id}>
            <td>{formatTime(f.at)}</td><td>{f.endpoint}</td><td>{f.event}</td>
            <td>{f.repository ?? "—"}{f.tag ? `:${f.tag}` : ""}</td><td>{f.attempts}</td><td>{f.lastError ?? ""}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Replication rules with each one's last result, and the copies that failed for good, for
 *  whoever may see them: the catalog right. */
function ReplicationPanel() {
  const state = useLoad(replicationState, []);
  const d = state.data;
  return (
    <section aria-labelledby="replication">
      <h2 id="replication">Replication</h2>
      <Status error={state.error} loading={d === undefined && !state.error} />
      {d === null && <p class="note">Shown to those who may list every repository (the catalog right).</p>}
      {d && d.rules.length === 0 && !d.sync?.length && <p>No replication rules configured (docs/replication.md).</p>}
      {d && d.rules.length > 0 && (
        <>
          <table aria-label="Replication rules">
            <thead><tr><th scope="col">Rule</th><th scope="col">Destination</th><th scope="col">Repositories</th><th scope="col">Trigger</th><th scope="col">Last result</th></tr></thead>
            <tbody>
              {d.rules.map((r) => (
                <tr key={r.name}>
                  <td>{r.name}</td>
                  <td><code>{r.destination}{r.prefix ? `/${r.prefix}` : ""}</code></td>
                  <td><code>{r.repositories.join(", ")}</code>{r.tags.join(",") !== "*" ? <> tags <code>{r.tags.join(", ")}</code></> : ""}</td>
                  <td>{r.onPush ? "on push" : "schedule, by hand"}{r.deletes ? ", deletes" : ""}</td>
                  <td><LastCopy last={r.last} /></td>
                </tr>
              ))}
            </tbody>
          </table>
          <p>{d.pending}{d.morePending ? "+" : ""} copies pending; {d.failed.length}{d.moreFailed ? "+" : ""} failed.</p>
          <FailedEntries label="Failed copies" owner="Rule" entries={d.failed} />
          {d.moreFailed && <p class="note">The first 100 failed copies are shown; <code>berth replicate failed</code> lists them all.</p>}
        </>
      )}
      {d && d.sync && d.sync.length > 0 && (
        <table aria-label="Sync rules">
          <thead><tr><th scope="col">Sync rule</th><th scope="col">Source</th><th scope="col">Repositories</th><th scope="col">Every</th><th scope="col">Last run</th></tr></thead>
          <tbody>
            {d.sync.map((r) => (
              <tr key={r.name}>
                <td>{r.name}</td>
                <td><code>{r.source}</code>{r.prefix ? <> into <code>{r.prefix}/</code></> : ""}</td>
                <td><code>{r.repositories.join(", ")}</code>{r.tags.join(",") !== "*" ? <> tags <code>{r.tags.join(", ")}</code></> : ""}</td>
                <td>{r.every}</td>
                <td>{r.running ? "running; " : ""}<LastSync last={r.last} /></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** A sync rule's last run: when, and what it fetched or why it failed. */
function LastSync({ last }: { last: SyncResult | null }) {
  if (!last) return <>never run</>;
  const r = last.report;
  const counts = r && r.tags > 0 ? `: ${r.synced} of ${r.tags} tags synced, ${r.unchanged} unchanged, ${r.blobs_fetched} blobs fetched` : "";
  if (!last.ok) return <span class="error">failed {formatTime(last.at)}{counts}: {last.error ?? "unknown error"}</span>;
  return <>ran {formatTime(last.at)}{counts}</>;
}

/** A rule's last copy: when, what, and how it went. */
function LastCopy({ last }: { last: ReplicationResult | null }) {
  if (!last) return <>never run</>;
  const what = `${last.repository}:${last.reference}`;
  if (!last.ok) return <span class="error">failed {formatTime(last.at)}: {what}: {last.error ?? "unknown error"}</span>;
  const r = last.report;
  const copied = r ? `, ${r.manifests} manifests, ${r.blobs_uploaded} blobs (${formatSize(r.bytes_uploaded)}) sent` : "";
  return <>copied {formatTime(last.at)}: {what}{copied}</>;
}

/** What the retention rule would delete in `repo` now (GC's plan, computed read-only). */
function RetentionNow({ repo }: { repo: string }) {
  const p = useLoad(() => retentionPreview(repo), [repo]);
  if (p.error) return <p class="error" role="alert">Retention preview: {p.error}</p>;
  if (!p.data) return <p>Retention would delete: …</p>;
  const { tags, manifests } = p.data;
  if (!tags.length && !manifests.length) return <p class="retention-now">Retention would delete: nothing.</p>;
  return (
    <p class="retention-now">
      Retention would delete now: {tags.length ? <>tags {tags.map((t, i) => <span key={t.name}>{i ? ", " : ""}<code title={t.reason}>{t.name}</code></span>)}</> : "no tags"}
      {manifests.length ? `; ${manifests.length} manifest${manifests.length > 1 ? "s" : ""}` : ""}.
    </p>
  );
}

/** A padlock, drawn (no emoji font needed); the badge's text says what it means. */
function Lock() {
  return (
    <svg class="lock" viewBox="0 0 16 16" width="12" height="12" aria-hidden="true">
      <path d="M4 7V5a4 4 0 0 1 8 0v2h1v8H3V7zm2 0h4V5a2 2 0 0 0-4 0z" fill="currentColor" />
    </svg>
  );
}

/** The full size of the image a tag names (manifest, config, layers; an index: all platforms'). */
function SizeCell({ repo, digest }: { repo: string; digest: string }) {
  const size = useLoad(async () => {
    const m = await getManifest(repo, digest);
    return fullSize(repo, m.manifest, m.size);
  }, [repo, digest]);
  if (size.error) return <span class="error">{size.error}</span>;
  return <>{size.data !== undefined ? formatSize(size.data) : "…"}</>;
}

/** The tag policies and retention rule that apply to `repo`, from the registry's config. */
function Policies({ repo, policy }: { repo: string; policy: PolicyState }) {
  const r = policy.retention;
  const none = !policy.immutable_tags.length && !policy.refused_tags.length && !r;
  const keeps = r && [
    r.keep_last !== undefined && `the last ${r.keep_last} tags pushed`,
    r.keep_within_days !== undefined && `tags pushed or pulled within ${r.keep_within_days} days`,
    r.keep_tags?.length && `tags matching ${r.keep_tags.join(", ")}`,
  ].filter(Boolean);
  return (
    <section aria-labelledby="pol" class="policies">
      <h2 id="pol">Policies</h2>
      {none && <p>No tag policy or retention rule applies to this repository.</p>}
      <ul>
        {policy.immutable_tags.map((i) => (
          <li key={`i${i.rule}`}><span class="badge">immutable</span> Tags matching <code>{i.tags.join(", ")}</code> never move and are never deleted (immutable_tags rule {i.rule}).</li>
        ))}
        {policy.refused_tags.map((f) => (
          <li key={`f${f.rule}`}><span class="badge">refused</span> Tags matching <code>{f.tags.join(", ")}</code> cannot be pushed here (refused_tags rule {f.rule}){f.message ? `: ${f.message}` : "."}</li>
        ))}
        {r && (
          <li>
            <span class="badge">retention</span> Garbage collection keeps {keeps && keeps.length ? keeps.join("; ") : "every tag"}
            {r.delete_untagged_after_days !== undefined ? `, and deletes untagged manifests unused for ${r.delete_untagged_after_days} days` : ""} (retention rule {r.rule}).
            <RetentionNow repo={repo} />
          </li>
        )}
      </ul>
    </section>
  );
}

type TagSort = "name" | "pushed";
/** Tags loaded (and sorted) at once; beyond, "Load more tags" adds as many again. */
const TAG_LOAD = 1000;

function Tags({ repo }: { repo: string }) {
  const [sort, setSort] = useState<TagSort>("name");
  const [status, setStatus] = useState("");
  const [limit, setLimit] = useState(TAG_LOAD);
  const [pageNo, setPageNo] = useState(0);
  const list = useLoad(async () => {
    // Tags first: when the repository is refused, its error is the one shown.
    const loaded = await tagDetails(repo, limit);
    const [canDelete, policy] = await Promise.all([mayDelete(repo), policyState(repo)]);
    return { ...loaded, canDelete, policy };
  }, [repo, limit]);
  const all = [...(list.data?.tags ?? [])];
  if (sort === "pushed") all.sort((a, b) => (b.pushedAt ?? 0) - (a.pushedAt ?? 0) || a.name.localeCompare(b.name));
  const pages = Math.max(1, Math.ceil(all.length / PAGE));
  const page = Math.min(pageNo, pages - 1);
  const rows = all.slice(page * PAGE, page * PAGE + PAGE);
  const del = async (tag: string) => {
    if (!confirm(`Delete tag ${repo}:${tag}? The image stays if other tags or digests refer to it.`)) return;
    try {
      await api(`/v2/${repo}/manifests/${tag}`, { method: "DELETE" }, `delete ${repo}:${tag}`);
      setStatus(`Deleted tag ${tag}.`);
      list.reload();
    } catch (e) {
      setStatus(`Failed: ${errText(e)}`);
    }
  };
  return (
    <main>
      <p><a href="#/">← Repositories</a></p>
      <h1>{repo}</h1>
      <p role="status">{status}</p>
      <Status error={list.error} loading={!list.data} />
      {list.data && (
        <>
          <p class="note">
            {all.length} tags{list.data.more ? ` loaded (the first ${all.length} by name; sorting covers those)` : ""}, {PAGE} a page.
            Size: manifest, config and layers (an index: all its platforms').
          </p>
          {list.data.more && <button type="button" onClick={() => setLimit(limit + TAG_LOAD)}>Load more tags</button>}
          <label for="sort">Sort by</label>{" "}
          <select id="sort" value={sort} onChange={(e) => { setSort((e.target as HTMLSelectElement).value as TagSort); setPageNo(0); }}>
            <option value="name">name</option>
            <option value="pushed">push time (newest first)</option>
          </select>
          <table aria-label={`Tags of ${repo}`}>
            <thead><tr><th scope="col">Tag</th><th scope="col">Pushed</th><th scope="col">Digest</th><th scope="col">Size</th><th scope="col">Policy</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.name}>
                  <td><a href={`#/r/${repo}@${r.name}`}>{r.name}</a></td>
                  <td class="time">{formatTime(r.pushedAt)}</td>
                  <td class="digest">{r.digest}</td>
                  <td><SizeCell repo={repo} digest={r.digest} /></td>
                  <td>{r.immutable !== undefined && <span class="badge locked" title={`policies.immutable_tags rule ${r.immutable}: never moved nor deleted`}><Lock /> immutable</span>}</td>
                  <td>{list.data!.canDelete && r.immutable === undefined && <button type="button" class="danger" onClick={() => del(r.name)} aria-label={`Delete tag ${r.name}`}>Delete</button>}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {rows.length === 0 && <p>No tags.</p>}
          <div class="pager">
            <button type="button" disabled={page < 1} onClick={() => setPageNo(page - 1)}>Previous tags</button>
            <button type="button" disabled={page >= pages - 1} onClick={() => setPageNo(page + 1)}>Next tags</button>
          </div>
          <Policies repo={repo} policy={list.data.policy} />
        </>
      )}
    </main>
  );
}

interface ImageConfig {
  created?: string;
  architecture?: string;
  os?: string;
  config?: { Entrypoint?: string[]; Cmd?: string[]; Env?: string[]; Labels?: Record<string, string>; WorkingDir?: string; User?: string };
  history?: { created?: string; created_by?: string; comment?: string; empty_layer?: boolean }[];
}

// Configs worth showing as an image's config; an artifact's config (often empty) is only named.
const IMAGE_CONFIGS = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

function Layers({ layers }: { layers: Descriptor[] }) {
  return (
    <table aria-label="Layers">
      <thead><tr><th scope="col">#</th><th scope="col">Media type</th><th scope="col">Size</th><th scope="col">Digest</th></tr></thead>
      <tbody>
        {layers.map((l, i) => (
          <tr key={l.digest + i}><td>{i + 1}</td><td>{l.mediaType}</td><td>{formatSize(l.size)}</td><td class="digest">{l.digest}</td></tr>
        ))}
      </tbody>
    </table>
  );
}

function Config({ repo, digest }: { repo: string; digest: string }) {
  const cfg = useLoad(async () => {
    const res = await api(`/v2/${repo}/blobs/${digest}`, {}, `config ${digest}`);
    return (await res.json()) as ImageConfig;
  }, [repo, digest]);
  if (!cfg.data) return <Status error={cfg.error} loading={true} />;
  const c = cfg.data.config ?? {};
  const labels = Object.entries(c.Labels ?? {});
  return (
    <section aria-labelledby="cfg">
      <h2 id="cfg">Config</h2>
      <dl>
        <dt>Created</dt><dd>{cfg.data.created ?? "—"}</dd>
        <dt>Platform</dt><dd>{[cfg.data.os, cfg.data.architecture].filter(Boolean).join("/") || "—"}</dd>
        <dt>Entrypoint</dt><dd><code>{c.Entrypoint ? JSON.stringify(c.Entrypoint) : "—"}</code></dd>
        <dt>Cmd</dt><dd><code>{c.Cmd ? JSON.stringify(c.Cmd) : "—"}</code></dd>
        <dt>Env</dt><dd>{(c.Env ?? []).length ? <ul>{c.Env!.map((e) => <li key={e}><code>{e}</code></li>)}</ul> : "—"}</dd>
        <dt>Labels</dt><dd>{labels.length ? <ul>{labels.map(([k, v]) => <li key={k}><code>{k}={v}</code></li>)}</ul> : "—"}</dd>
      </dl>
      <h3>History</h3>
      <ol class="history">
        {(cfg.data.history ?? []).map((h, i) => (
          <li key={i}><code>{h.created_by ?? ""}</code> <small>{h.created ?? ""}{h.empty_layer ? " (no layer)" : ""}{h.comment ? ` — ${h.comment}` : ""}</small></li>
        ))}
      </ol>
    </section>
  );
}

function Referrers({ repo, digest }: { repo: string; digest: string }) {
  const refs = useLoad(async () => {
    const res = await api(`/v2/${repo}/referrers/${digest}`, { headers: { Accept: "application/vnd.oci.image.index.v1+json" } }, `referrers of ${digest}`);
    const idx = (await res.json()) as Manifest;
    const groups = new Map<string, Descriptor[]>();
    for (const d of idx.manifests ?? []) {
      const t = d.artifactType ?? "(no artifact type)";
      groups.set(t, [...(groups.get(t) ?? []), d]);
    }
    return [...groups.entries()];
  }, [repo, digest]);
  return (
    <section aria-labelledby="refs">
      <h2 id="refs">Referrers</h2>
      <Status error={refs.error} loading={!refs.data && !refs.error} />
      {refs.data && refs.data.length === 0 && <p>None (no signatures, SBOMs or attestations refer to this manifest).</p>}
      {refs.data?.map(([type, ds]) => (
        <div key={type} class="refgroup">
          <h3>{type} <small>({ds.length})</small></h3>
          <ul>{ds.map((d) => <li key={d.digest}><a href={`#/r/${repo}@${d.digest}`} class="digest">{d.digest}</a> · {formatSize(d.size)}</li>)}</ul>
        </div>
      ))}
    </section>
  );
}

function Image({ repo, reference }: { repo: string; reference: string }) {
  const [status, setStatus] = useState("");
  const img = useLoad(async () => {
    const got = await getManifest(repo, reference);
    return { ...got, total: await fullSize(repo, got.manifest, got.size), canDelete: await mayDelete(repo) };
  }, [repo, reference]);
  const isTag = !reference.includes(":");
  const del = async () => {
    if (!img.data) return;
    const d = img.data.digest;
    if (!confirm(`Delete manifest ${repo}@${d}? Every tag pointing at it goes too.`)) return;
    try {
      await api(`/v2/${repo}/manifests/${d}`, { method: "DELETE" }, `delete ${repo}@${d}`);
      location.hash = `#/r/${repo}`;
    } catch (e) {
      setStatus(`Failed: ${errText(e)}`);
    }
  };
  const m = img.data?.manifest;
  return (
    <main>
      <p><a href={`#/r/${repo}`}>← {repo}</a></p>
      <h1>{repo}{isTag ? `:${reference}` : ""}</h1>
      <Status error={img.error} loading={!img.data} />
      {img.data && m && (
        <>
          <dl>
            <dt>Digest</dt><dd class="digest">{img.data.digest}</dd>
            <dt>Media type</dt><dd>{img.data.mediaType}</dd>
            {m.artifactType && <><dt>Artifact type</dt><dd>{m.artifactType}</dd></>}
            <dt>{isIndex(m) ? "Size (all platforms: manifests, configs, layers)" : "Size (manifest, config, layers)"}</dt><dd>{formatSize(img.data.total)}</dd>
            {m.subject && <><dt>Refers to</dt><dd><a class="digest" href={`#/r/${repo}@${m.subject.digest}`}>{m.subject.digest}</a></dd></>}
          </dl>
          <h2>Pull</h2>
          <Copy text={`docker pull ${host}/${repo}@${img.data.digest}`} label="Copy pull command by digest" />
          {isTag && <Copy text={`docker pull ${host}/${repo}:${reference}`} label="Copy pull command by tag" />}
          {img.data.canDelete && <p><button type="button" class="danger" onClick={del}>Delete manifest</button></p>}
          <p role="status">{status}</p>
          {isIndex(m) ? (
            <section aria-labelledby="plat">
              <h2 id="plat">Platforms</h2>
              <ul class="list">
                {(m.manifests ?? []).map((d) => (
                  <li key={d.digest}>
                    <a href={`#/r/${repo}@${d.digest}`}>{d.platform ? [d.platform.os, d.platform.architecture, d.platform.variant].filter(Boolean).join("/") : d.artifactType ?? d.mediaType}</a>
                    {" "}<span class="digest">{d.digest}</span> · {formatSize(d.size)}
                  </li>
                ))}
              </ul>
            </section>
          ) : (
            <>
              <section aria-labelledby="lay"><h2 id="lay">Layers</h2><Layers layers={m.layers ?? []} /></section>
              {m.config && (IMAGE_CONFIGS.includes(m.config.mediaType)
                ? <Config repo={repo} digest={m.config.digest} />
                : <p>Config: {m.config.mediaType} · {formatSize(m.config.size)}</p>)}
            </>
          )}
          <Referrers repo={repo} digest={img.data.digest} />
        </>
      )}
    </main>
  );
}

function App() {
  const [route, setRoute] = useState(parseRoute(location.hash));
  const [user, setUser] = useState(currentUser());
  const [auth, setAuth] = useState<string>("");
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", on);
    authEnabled().then((a) => setAuth(a ? "" : "Auth is off on this registry: everyone may read and delete."), (e) => setAuth(`Failed to reach the registry: ${errText(e)}`));
    return () => removeEventListener("hashchange", on);
  }, []);
  // A new login or logout changes what may be seen: re-render the view from scratch.
  const key = `${user}:${location.hash}`;
  return (
    <>
      <Header user={user} authOff={auth.startsWith("Auth is off")} onLogout={() => { logout(); setUser(null); location.hash = "#/"; }} />
      {auth && <p class="note banner">{auth}</p>}
      <div key={key}>
        {route.view === "login" && <Login onDone={() => { setUser(currentUser()); location.hash = "#/"; }} />}
        {route.view === "repos" && <Repos />}
        {route.view === "tags" && <Tags repo={route.repo} />}
        {route.view === "image" && <Image repo={route.repo} reference={route.ref} />}
      </div>
    </>
  );
}

render(<App />, document.getElementById("app")!);
