// Writes an OCI image layout for the UI tests (node fixture.mjs DIR): a two-platform index
// (ref "v1"), one of its images alone (ref "single"), and a signature-like artifact whose
// subject is the index (ref "sig"). skopeo pushes them; nothing here talks to the registry.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

const dir = process.argv[2];
mkdirSync(join(dir, "blobs/sha256"), { recursive: true });
const sha = (b) => createHash("sha256").update(b).digest("hex");
const blob = (bytes) => {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  const h = sha(b);
  writeFileSync(join(dir, "blobs/sha256", h), b);
  return { digest: `sha256:${h}`, size: b.length };
};
const json = (o) => Buffer.from(JSON.stringify(o));

// A gzip layer with one file (fixed mtime and owner: the same bytes on every run).
function layer(name, text) {
  const root = mkdtempSync(join(tmpdir(), "berth-ui-layer-"));
  writeFileSync(join(root, name), text);
  const tar = execFileSync("tar", ["-C", root, "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-cf", "-", name]);
  execFileSync("sh", ["-c", `rm -rf '${root}'`]);
  return blob(execFileSync("gzip", ["-9n"], { input: tar }));
}

function image(arch) {
  const l1 = layer("hello.txt", `hello from ${arch}\n`);
  const l2 = layer("app.conf", `arch=${arch}\n`.repeat(100));
  const config = blob(json({
    created: "2026-01-02T03:04:05Z", architecture: arch, os: "linux",
    config: {
      Entrypoint: ["/bin/hello"], Cmd: ["--greet", "world"], Env: ["PATH=/usr/bin", `ARCH=${arch}`],
      Labels: { "org.opencontainers.image.source": "https://example.com/berth-ui-test" },
    },
    rootfs: { type: "layers", diff_ids: [l1, l2].map((l) => `sha256:${sha(execFileSync("gzip", ["-dc"], { input: readFileSync(join(dir, "blobs/sha256", l.digest.slice(7))) }))}`) },
    history: [{ created: "2026-01-02T03:04:05Z", created_by: "COPY hello.txt /" }, { created: "2026-01-02T03:04:05Z", created_by: "COPY app.conf /" }],
  }));
  const m = json({
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
    layers: [l1, l2].map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...l })),
  });
  const desc = { mediaType: "application/vnd.oci.image.manifest.v1+json", ...blob(m), platform: { os: "linux", architecture: arch } };
  // What the UI shows as the image's size: manifest, config and layers.
  Object.defineProperty(desc, "total", { value: desc.size + config.size + l1.size + l2.size, enumerable: false });
  return desc;
}

const amd = image("amd64");
const arm = image("arm64");
const indexDesc = { mediaType: "application/vnd.oci.image.index.v1+json", ...blob(json({
  schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [amd, arm],
})) };
const empty = blob("{}");
const sig = blob(json({ critical: { type: "test signature" }, optional: {} }));
const sigDesc = { mediaType: "application/vnd.oci.image.manifest.v1+json", ...blob(json({
  schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
  artifactType: "application/vnd.dev.cosign.simplesigning.v1+json",
  config: { mediaType: "application/vnd.oci.empty.v1+json", ...empty },
  layers: [{ mediaType: "application/vnd.dev.cosign.simplesigning.v1+json", ...sig }],
  subject: { mediaType: indexDesc.mediaType, digest: indexDesc.digest, size: indexDesc.size },
})) };
const ref = (d, name) => ({ mediaType: d.mediaType, digest: d.digest, size: d.size, annotations: { "org.opencontainers.image.ref.name": name } });
writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
writeFileSync(join(dir, "index.json"), JSON.stringify({
  schemaVersion: 2, manifests: [ref(indexDesc, "v1"), ref(amd, "single"), ref(sigDesc, "sig")],
}));
console.log(JSON.stringify({ indexTotal: indexDesc.size + amd.total + arm.total, index: indexDesc.digest, amd64: amd.digest, arm64: arm.digest, sig: sigDesc.digest }));
