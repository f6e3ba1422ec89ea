// The registry's public API, as the browser sees it: Docker token auth (docs/auth.md) on top of
// the OCI distribution endpoints. Tokens live in memory; only the refresh token of a login is kept
// in sessionStorage (gone when the tab closes), never in a cookie.

export const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

/** A failed request, with what was asked and what the registry said. */
export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

interface Challenge {
  realm: string;
  service: string;
  scope?: string;
}

const REFRESH_KEY = "berth.refresh";
const USER_KEY = "berth.user";
const tokens = new Map<string, string>(); // scope -> access token
let challengeInfo: Challenge | null = null;
let authOn: boolean | null = null;

export function currentUser(): string | null {
  return sessionStorage.getItem(USER_KEY);
}

function parseChallenge(header: string | null): Challenge | null {
  if (!header || !/^Bearer\s/i.test(header)) return null;
  const out: Record<string, string> = {};
  for (const m of header.matchAll(/(\w+)="([^"]*)"/g)) out[m[1]] = m[2];
  return out.realm ? { realm: out.realm, service: out.service ?? "", scope: out.scope } : null;
}

/** Whether the registry asks for tokens at all (`GET /v2/` answers 401 when auth is on). */
export async function authEnabled(): Promise<boolean> {
  if (authOn !== null) return authOn;
  const res = await fetch("/v2/", { headers: { Accept: "application/json" } }).catch((e: unknown) => {
    throw new ApiError(0, `GET /v2/: no answer from the registry (${e instanceof Error ? e.message : e})`);
  });
  challengeInfo = parseChallenge(res.headers.get("WWW-Authenticate"));
  authOn = res.status === 401 && challengeInfo !== null;
  return authOn;
}

/** A token for `scope`: with the login's refresh token, or anonymous. */
async function fetchToken(scope: string): Promise<string | null> {
  await authEnabled();
  if (!challengeInfo) return null;
  const refresh = sessionStorage.getItem(REFRESH_KEY);
  let res: Response;
  if (refresh) {
    const form = new URLSearchParams({
      grant_type: "refresh_token", refresh_token: refresh,
      service: challengeInfo.service, scope,
    });
    res = await fetch(challengeInfo.realm, { method: "POST", body: form });
  } else {
    const q = new URLSearchParams({ service: challengeInfo.service, scope });
    res = await fetch(`${challengeInfo.realm}?${q}`);
  }
  if (!res.ok) throw new ApiError(res.status, `token for ${scope}: ${await errorText(res)}`);
  const body = await res.json();
  const token: string = body.token ?? body.access_token;
  tokens.set(scope, token);
  return token;
}

async function errorText(res: Response): Promise<string> {
  try {
    const body = await res.clone().json();
    const e = body?.errors?.[0];
    if (e) return `${res.status} ${e.code}: ${e.message}`;
  } catch { /* not JSON */ }
  return `${res.status} ${res.statusText}`;
}

/** Logs in with the token endpoint's password grant; keeps only the refresh token. */
export async function login(username: string, password: string): Promise<void> {
  await authEnabled();
  if (!challengeInfo) throw new ApiError(0, "auth is off on this registry: no login needed");
  const form = new URLSearchParams({
    grant_type: "password", username, password, service: challengeInfo.service,
    access_type: "offline", client_id: "berth-ui",
  });
  const res = await fetch(challengeInfo.realm, { method: "POST", body: form });
  if (!res.ok) throw new ApiError(res.status, `login failed: ${await errorText(res)}`);
  const body = await res.json();
  if (!body.refresh_token) throw new ApiError(res.status, "login failed: no refresh token in the answer");
  tokens.clear();
  sessionStorage.setItem(REFRESH_KEY, body.refresh_token);
  sessionStorage.setItem(USER_KEY, username);
}

export function logout(): void {
  tokens.clear();
  sessionStorage.removeItem(REFRESH_KEY);
  sessionStorage.removeItem(USER_KEY);
}

/** A registry request; on a 401 challenge fetches a token for its scope and tries once more. */
export async function api(path: string, init: RequestInit = {}, what = path): Promise<Response> {
  const go = (token?: string | null) => {
    const headers = new Headers(init.headers);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    return fetch(path, { ...init, headers }).catch((e: unknown) => {
      throw new ApiError(0, `${what}: no answer from the registry (${e instanceof Error ? e.message : e})`);
    });
  };
  let res = await go();
  if (res.status === 401) {
    const ch = parseChallenge(res.headers.get("WWW-Authenticate"));
    if (ch?.scope) {
      const token = tokens.get(ch.scope) ?? (await fetchToken(ch.scope));
      res = await go(token);
      if (res.status === 401 && tokens.has(ch.scope)) {
        tokens.delete(ch.scope); // expired: one fresh try
        res = await go(await fetchToken(ch.scope));
      }
    }
  }
  if (!res.ok) throw new ApiError(res.status, `${what}: ${await errorText(res)}`);
  return res;
}

// Any scope identifies the caller: the token endpoint grants what it may and the token names who.
const IDENTITY_SCOPE = "registry:catalog:*";

/**
 * A request whose answer depends on who asks and needs no scope (`/v2/_berth/repositories`):
 * with a token of the login when there is one, else anonymous.
 */
export async function apiAsCaller(path: string, what = path): Promise<Response> {
  const loggedIn = sessionStorage.getItem(REFRESH_KEY) !== null && (await authEnabled());
  const send = async () => {
    const token = loggedIn ? tokens.get(IDENTITY_SCOPE) ?? (await fetchToken(IDENTITY_SCOPE)) : null;
    return api(path, token ? { headers: { Authorization: `Bearer ${token}` } } : {}, what);
  };
  try {
    return await send();
  } catch (e) {
    if (!(loggedIn && e instanceof ApiError && e.status === 401)) throw e;
    tokens.delete(IDENTITY_SCOPE); // expired: one fresh try
    return send();
  }
}

/** Whether the caller may delete in `repo`: with auth off always; else what a token grants. */
export async function mayDelete(repo: string): Promise<boolean> {
  if (!(await authEnabled())) return true;
  if (!sessionStorage.getItem(REFRESH_KEY)) return false;
  const scope = `repository:${repo}:pull,delete`;
  try {
    const token = await fetchToken(scope);
    const payload = JSON.parse(atob(token!.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    const access: { type: string; name: string; actions: string[] }[] = payload.access ?? [];
    return access.some((a) => a.name === repo && (a.actions.includes("delete") || a.actions.includes("*")));
  } catch {
    return false;
  }
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

export interface Manifest {
  mediaType?: string;
  artifactType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export async function getManifest(repo: string, ref: string): Promise<{ manifest: Manifest; digest: string; size: number; mediaType: string }> {
  const res = await api(`/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_TYPES } }, `manifest ${repo}:${ref}`);
  const text = await res.text();
  const manifest = JSON.parse(text) as Manifest;
  return {
    manifest,
    digest: res.headers.get("Docker-Content-Digest") ?? "",
    size: new TextEncoder().encode(text).length,
    mediaType: res.headers.get("Content-Type") ?? manifest.mediaType ?? "",
  };
}

export function isIndex(m: Manifest): boolean {
  return Array.isArray(m.manifests);
}

/** Total size of an image: manifest + config + layers (an index: the sum of its entries). */
export function imageSize(m: Manifest, manifestSize: number): number {
  if (isIndex(m)) return manifestSize + (m.manifests ?? []).reduce((s, d) => s + d.size, 0);
  return manifestSize + (m.config?.size ?? 0) + (m.layers ?? []).reduce((s, d) => s + d.size, 0);
}

/** Everything an image or index stores: for an index, its platforms' manifests, configs and
 *  layers too (one request per platform). Blobs shared between platforms count once each time. */
export async function fullSize(repo: string, m: Manifest, manifestSize: number): Promise<number> {
  if (!isIndex(m)) return imageSize(m, manifestSize);
  const parts = await Promise.all((m.manifests ?? []).map(async (d) => {
    const child = await getManifest(repo, d.digest);
    return imageSize(child.manifest, child.size);
  }));
  return parts.reduce((a, b) => a + b, manifestSize);
}

/** The `<n>`/`last` pagination of the catalog and the tag list, read from the Link header. */
export function nextLast(res: Response): string | null {
  const link = res.headers.get("Link");
  const m = link?.match(/[?&]last=([^&>]*)/);
  return m ? decodeURIComponent(m[1]) : null;
}

export function formatSize(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** A tag as `GET /v2/<name>/_berth/tags` reports it (docs/ui.md). */
export interface TagDetail {
  name: string;
  digest: string;
  mediaType?: string | null;
  /** The manifest's bytes (not its layers'). */
  size?: number | null;
  /** Unix seconds; null: pushed before push times were kept. */
  pushedAt?: number | null;
  /** The immutable_tags rule covering the tag. */
  immutable?: number;
}

/**
 * Tags of `repo` with digest and push time, in name order, page after page (the endpoint gives
 * at most 100 a request) until `limit` tags are loaded. `more`: the registry has further tags.
 */
export async function tagDetails(repo: string, limit: number): Promise<{ tags: TagDetail[]; more: boolean }> {
  const tags: TagDetail[] = [];
  let last = "";
  while (tags.length < limit) {
    const q = `?n=${Math.min(100, limit - tags.length)}${last ? `&last=${encodeURIComponent(last)}` : ""}`;
    const res = await api(`/v2/${repo}/_berth/tags${q}`, {}, `tags of ${repo}`);
    tags.push(...(((await res.json()).tags ?? []) as TagDetail[]));
    const next = nextLast(res);
    if (!next) return { tags, more: false };
    last = next;
  }
  return { tags, more: true };
}

/** The rules of `[policies]` that apply to a repository (`GET /v2/<name>/_berth/policy`). */
export interface PolicyState {
  immutable_tags: { rule: number; tags: string[] }[];
  refused_tags: { rule: number; tags: string[]; message?: string }[];
  retention: null | {
    rule: number; keep_last?: number; keep_within_days?: number; keep_tags?: string[];
    delete_untagged_after_days?: number;
  };
}

export async function policyState(repo: string): Promise<PolicyState> {
  return (await api(`/v2/${repo}/_berth/policy`, {}, `policies of ${repo}`)).json();
}

export interface QuotaUsage { name: string; repositories: string[]; limit: number; used: number }

/** Storage use per namespace (`GET /v2/_berth/quotas`, docs/quotas.md); null when the caller
 *  may not see it (it needs the catalog right, like the full repository list). */
export async function quotaUsage(): Promise<QuotaUsage[] | null> {
  try {
    return (await (await apiAsCaller("/v2/_berth/quotas", "storage use")).json()).quotas ?? [];
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return null;
    throw e;
  }
}

export interface WebhookEndpoint { name: string; url: string; events: string[]; repositories: string[] }
export interface FailedDelivery {
  id: string; endpoint: string; event: string; repository?: string | null; tag?: string | null;
  digest?: string | null; attempts: number; lastError?: string | null; at: number;
}
export interface WebhookState {
  endpoints: WebhookEndpoint[]; failed: FailedDelivery[]; moreFailed?: boolean; pending: number; morePending?: boolean;
}

/** Webhook endpoints and failed deliveries (`GET /v2/_berth/webhooks`, docs/webhooks.md); null
 *  when the caller may not see them (the catalog right, like storage use). */
export async function webhookState(): Promise<WebhookState | null> {
  try {
    return await (await apiAsCaller("/v2/_berth/webhooks", "webhooks")).json();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return null;
    throw e;
  }
}

export interface ReplicationResult {
  at: number; repository: string; reference: string; ok: boolean; error?: string | null;
  report?: { manifests: number; manifests_present: number; blobs_uploaded: number; blobs_mounted: number; blobs_present: number; bytes_uploaded: number };
}
export interface ReplicationRuleView {
  name: string; destination: string; repositories: string[]; tags: string[]; prefix: string;
  deletes: boolean; onPush: boolean; last: ReplicationResult | null;
}
export interface SyncResult {
  at: number; ok: boolean; error?: string | null;
  report?: { tags: number; unchanged: number; synced: number; failed: number; manifests: number; blobs_fetched: number };
}
export interface SyncRuleView {
  name: string; source: string; repositories: string[]; tags: string[]; prefix: string; every: string;
  started: number; running: boolean; last: SyncResult | null;
}
export interface ReplicationState {
  rules: ReplicationRuleView[]; sync?: SyncRuleView[]; failed: FailedDelivery[]; moreFailed?: boolean; pending: number; morePending?: boolean;
}

/** Replication rules, their last results and failed copies (`GET /v2/_berth/replication`,
 *  docs/replication.md); null when the caller may not see them (the catalog right). */
export async function replicationState(): Promise<ReplicationState | null> {
  try {
    return await (await apiAsCaller("/v2/_berth/replication", "replication")).json();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return null;
    throw e;
  }
}

/** What retention would delete in a repository now (`GET /v2/<name>/_berth/retention`). */
export interface RetentionPreview {
  rule: number | null;
  tags: { name: string; digest: string; reason: string }[];
  manifests: { digest: string; reason: string }[];
}

export async function retentionPreview(repo: string): Promise<RetentionPreview> {
  return (await api(`/v2/${repo}/_berth/retention`, {}, `retention preview of ${repo}`)).json();
}

/** A push time for people, the same in every locale: `2026-12-06 14:40:12 UTC`. */
export function formatTime(unix?: number | null): string {
  return unix ? `${new Date(unix * 1000).toISOString().slice(0, 19).replace("T", " ")} UTC` : "unknown";
}
