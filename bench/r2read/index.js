export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    const n = Number(url.searchParams.get("mib") || "200");
    if (url.pathname === "/put-single") {
      await env.B.put("single", req.body);
      return new Response("ok");
    }
    if (url.pathname === "/put-multi") {
      const part = 8 * 1024 * 1024;
      const mp = await env.B.createMultipartUpload("multi");
      const reader = req.body.getReader();
      let buf = new Uint8Array(0), parts = [], num = 1;
      for (;;) {
        const { done, value } = await reader.read();
        if (value) { const nb = new Uint8Array(buf.length + value.length); nb.set(buf); nb.set(value, buf.length); buf = nb; }
        while (buf.length >= part || (done && buf.length > 0)) {
          const take = Math.min(part, buf.length);
          parts.push(await mp.uploadPart(num++, buf.slice(0, take)));
          buf = buf.slice(take);
        }
        if (done) break;
      }
      await mp.complete(parts);
      return new Response("ok " + parts.length);
    }
    const obj = await env.B.get(url.pathname.slice(1));
    if (!obj) return new Response("missing", { status: 404 });
    return new Response(obj.body, { headers: { "content-length": String(obj.size) } });
  },
};
