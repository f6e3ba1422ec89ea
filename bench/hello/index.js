// The ceiling for bench/edge-peers.sh: a Worker that does nothing but answer 200 "ok", run under
// the same `wrangler dev` as Berth's Worker and the peer. What it costs is wrangler dev's own
// per-request overhead (workerd, the local proxy, loopback), which no registry can go below.
export default {
  async fetch() {
    return new Response("ok", { headers: { "content-type": "text/plain" } });
  },
};
