// The byte-moving loops of the Worker in JavaScript, so that no body byte passes through wasm:
// copying each chunk into wasm memory and out again, and hashing it there, was most of the
// Worker's CPU per MiB uploaded. Rust decides what happens (src/native.rs); these only move bytes
// and hash them with the runtime's own sha256 (`crypto.DigestStream`).

// Takes the body of a request into a fresh upload (`berth_core::parted` layout): parts of
// exactly `partSize` bytes into a multipart upload of `dataKey`, created with the first full
// part, the rest into the staging object `tailPrefix + <bytes received>`; the sha256 of it all
// from the runtime. The body is read with workerd's BYOB `readAtLeast` straight into a part
// buffer, a part at a time: no per-chunk JavaScript, no copy. Memory stays flat: two part
// buffers, one filling while the other uploads (uploadPart reads its buffer until its promise
// settles, so a buffer is refilled only after that: refilling it at once corrupted parts).
//
// Resolves to {received, sha256, multipart, etags, tailKey, tailLen}, {tooLarge: true} when more
// than `limit` bytes came (limit < 0: no limit), or {broken, received} when the body broke off.
// After either of those nothing the call created is left open; R2 errors reject.
export async function appendNative(bucket, body, dataKey, tailPrefix, partSize, limit) {
  const digest = new crypto.DigestStream("SHA-256");
  const hashing = digest.getWriter();
  const reader = body.getReader({ mode: "byob" });
  let cur = new ArrayBuffer(partSize), spare = new ArrayBuffer(partSize);
  let fill = 0, received = 0, upload = null, inflight = null;
  const etags = [];
  const sendPart = async () => {
    // The spare buffer is free once its upload settled.
    if (inflight) await inflight;
    if (!upload) upload = await bucket.createMultipartUpload(dataKey);
    const number = etags.length + 1;
    etags.push(null);
    inflight = upload.uploadPart(number, new Uint8Array(cur)).then((part) => { etags[number - 1] = part.etag; });
    [cur, spare] = [spare, cur];
    fill = 0;
  };
  const discard = async () => {
    try { if (inflight) await inflight; } catch (_) { /* aborted below anyway */ }
    if (upload) await upload.abort().catch(() => {});
  };
  try {
    for (;;) {
      let step;
      try {
        // The view's buffer is transferred to the read and comes back as step.value's.
        step = await reader.readAtLeast(partSize - fill, new Uint8Array(cur, fill, partSize - fill));
      } catch (e) {
        await discard();
        return { broken: String(e && e.message || e), received };
      }
      const got = step.value;
      if (!got) throw new Error("the request body's read returned no buffer");
      cur = got.buffer;
      if (got.byteLength > 0) {
        received += got.byteLength;
        if (limit >= 0 && received > limit) {
          await discard();
          return { tooLarge: true };
        }
        await hashing.write(got);
        fill += got.byteLength;
        if (fill === partSize) await sendPart();
      }
      if (step.done) break;
    }
    if (inflight) await inflight;
    await hashing.close();
    const sum = new Uint8Array(await digest.digest);
    let tailKey = null;
    if (fill > 0) {
      tailKey = tailPrefix + received;
      await bucket.put(tailKey, new Uint8Array(cur, 0, fill));
    }
    return {
      received,
      sha256: "sha256:" + Array.from(sum, (b) => b.toString(16).padStart(2, "0")).join(""),
      multipart: upload ? upload.uploadId : null,
      etags,
      tailKey,
      tailLen: fill,
    };
  } catch (e) {
    await discard();
    throw e;
  } finally {
    reader.releaseLock();
  }
}

// Splits a blob's body (an R2 read) into the client's stream, returned, and a copy into the
// Workers cache under `key`, from that one read. Both branches are FixedLengthStreams, whose
// writes settle only as their reader takes them: the read goes at the pace of the slower side
// and nothing piles up in memory (a plain tee buffers what one branch reads ahead of the other,
// which for a layer of hundreds of MiB would not fit in 128 MB). A client that goes away does
// not stop the copy into the cache (aborting it there stored a truncated entry under wrangler
// dev); a read that breaks aborts both. The promise in `done` settles when both are finished;
// the Worker waits for it (`waitUntil`).
export function teeIntoCache(src, size, key, cacheControl) {
  const toClient = new FixedLengthStream(size);
  const toCache = new FixedLengthStream(size);
  const client = toClient.writable.getWriter();
  const cache = toCache.writable.getWriter();
  const response = new Response(toCache.readable, {
    headers: { "cache-control": cacheControl, "content-length": String(size) },
  });
  const stored = caches.default.put(key, response).catch((e) => {
    console.warn(`cache fill ${key}: ${e}`);
  });
  const pump = (async () => {
    const reader = src.getReader();
    let clientOpen = true, caching = true;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        // Each side its own copy, made before either write: a write may take over the buffer.
        const copy = clientOpen && caching ? value.slice() : value;
        const writes = [];
        if (clientOpen) writes.push(client.write(value).catch(() => { clientOpen = false; }));
        if (caching) writes.push(cache.write(copy).catch(() => { caching = false; }));
        if (writes.length === 0) {
          await reader.cancel().catch(() => {});
          return;
        }
        await Promise.all(writes);
      }
      if (clientOpen) await client.close().catch(() => {});
      if (caching) await cache.close();
    } catch (e) {
      await Promise.all([
        client.abort(e).catch(() => {}),
        cache.abort(e).catch(() => {}),
        reader.cancel(e).catch(() => {}),
      ]);
    }
  })();
  return { stream: toClient.readable, done: Promise.all([pump, stored]) };
}
