//! `berth demo DIR`: writes a tiny image as an OCI image layout, so the README's Quickstart
//! runs on a machine with nothing but Berth and one client, offline (no base image to pull).
//!
//! The image is one uncompressed tar layer holding `/hello`, a static x86-64 (171 bytes) Linux
//! program (made here, no toolchain needed) that prints a greeting and exits: `docker run` and
//! `podman run` can run it on an amd64 host. The bytes are the same on every run, so the
//! digests are too.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The OCI layout directory to write (created if missing; an index.json already there
    /// keeps its other tags). Push it with `skopeo copy oci:DIR:TAG docker://REGISTRY/REPO:TAG`.
    dir: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`) the image gets in the layout.
    #[arg(long, default_value = "latest")]
    tag: String,
}

/// What `/hello` prints.
pub const GREETING: &str = "Hello from Berth!\n";

pub fn run(args: DemoArgs) -> Result<(), String> {
    let digest = write_layout(&args.dir, &args.tag)?;
    println!("{digest}");
    eprintln!(
        "berth demo: wrote {}:{} (push it: skopeo copy oci:{}:{} docker://127.0.0.1:5000/demo/app:v1)",
        args.dir.display(),
        args.tag,
        args.dir.display(),
        args.tag
    );
    Ok(())
}

/// Writes the image into the layout at `dir` under `tag`; returns the manifest's digest.
pub fn write_layout(dir: &Path, tag: &str) -> Result<String, String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
    let layer = tar_one_file("hello", 0o755, &hello_elf());
    let layer_digest = put_blob(&blobs, &layer)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "berth demo" }],
    }))
    .map_err(|e| e.to_string())?;
    let config_digest = put_blob(&blobs, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .map_err(|e| e.to_string())?;
    let manifest_digest = put_blob(&blobs, &manifest)?;

    write(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    // Keep the layout's other tags: the same directory can hold several images.
    let index_path = dir.join("index.json");
    let mut entries: Vec<Value> = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default();
    entries.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() != Some(tag));
    entries.push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest.len(),
        "annotations": { "org.opencontainers.image.ref.name": tag },
    }));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    write(&index_path, &serde_json::to_vec_pretty(&index).map_err(|e| e.to_string())?)?;
    Ok(manifest_digest)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn put_blob(blobs: &Path, bytes: &[u8]) -> Result<String, String> {
    let hex = hex::encode(Sha256::digest(bytes));
    write(&blobs.join(&hex), bytes)?;
    Ok(format!("sha256:{hex}"))
}

/// A POSIX (ustar) tar archive holding one regular file at the root.
fn tar_one_file(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    let field = |h: &mut [u8; 512], at: usize, value: &[u8]| h[at..at + value.len()].copy_from_slice(value);
    field(&mut header, 0, name.as_bytes());
    field(&mut header, 100, format!("{mode:07o}\0").as_bytes());
    field(&mut header, 108, b"0000000\0"); // uid
    field(&mut header, 116, b"0000000\0"); // gid
    field(&mut header, 124, format!("{:011o}\0", data.len()).as_bytes());
    field(&mut header, 136, b"00000000000\0"); // mtime: fixed, so the digest is too
    field(&mut header, 148, b"        "); // checksum, counted as spaces
    header[156] = b'0'; // a regular file
    field(&mut header, 257, b"ustar\0");
    field(&mut header, 263, b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    field(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().next_multiple_of(512), 0);
    // The end of the archive: two zero blocks.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// A static x86-64 Linux ELF executable: `write(1, GREETING)`, then `exit(0)`. One loadable
/// segment holding the headers, the code and the text; no libc, no dynamic loader.
fn hello_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56; // ELF header + one program header
    let msg = GREETING.as_bytes();
    let mut code = Vec::new();
    code.extend_from_slice(&[0xb8, 1, 0, 0, 0]); // mov eax, 1 (write)
    code.extend_from_slice(&[0xbf, 1, 0, 0, 0]); // mov edi, 1 (stdout)
    code.extend_from_slice(&[0x48, 0x8d, 0x35]); // lea rsi, [rip + rel32] (the text, after the code)
    code.extend_from_slice(&16i32.to_le_bytes()); // from the end of this instruction (17) to 33
    code.push(0xba); // mov edx, len
    code.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    code.extend_from_slice(&[0x0f, 0x05]); // syscall
    code.extend_from_slice(&[0xb8, 60, 0, 0, 0]); // mov eax, 60 (exit)
    code.extend_from_slice(&[0x31, 0xff]); // xor edi, edi (status 0)
    code.extend_from_slice(&[0x0f, 0x05]); // syscall
    debug_assert_eq!(code.len(), 33);
    let total = HEADERS + code.len() as u64 + msg.len() as u64;

    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 64-bit, LE
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // version
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry: the code
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers' offset
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // ELF header size
    elf.extend_from_slice(&56u16.to_le_bytes()); // program header size
    elf.extend_from_slice(&1u16.to_le_bytes()); // one program header
    elf.extend_from_slice(&[64, 0, 0, 0, 0, 0]); // section header size, count, names index
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // read + execute
    elf.extend_from_slice(&0u64.to_le_bytes()); // from file offset 0
    elf.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // paddr
    elf.extend_from_slice(&total.to_le_bytes()); // file size
    elf.extend_from_slice(&total.to_le_bytes()); // memory size
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // alignment
    debug_assert_eq!(elf.len() as u64, HEADERS);
    elf.extend_from_slice(&code);
    elf.extend_from_slice(msg);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_is_a_tar_with_one_executable() {
        let tar = tar_one_file("hello", 0o755, b"abc");
        assert_eq!(tar.len(), 512 + 512 + 1024);
        assert_eq!(&tar[0..5], b"hello");
        assert_eq!(&tar[257..263], b"ustar\0");
        assert_eq!(&tar[512..515], b"abc");
        // The checksum covers the header with its own field as spaces.
        let mut h = tar[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
    }

    #[test]
    fn layout_is_deterministic_and_keeps_other_tags() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_layout(dir.path(), "v1").unwrap();
        let b = write_layout(dir.path(), "v2").unwrap();
        assert_eq!(a, b);
        let index: Value = serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        let manifest = std::fs::read(dir.path().join("blobs/sha256").join(&a[7..])).unwrap();
        assert_eq!(format!("sha256:{}", hex::encode(Sha256::digest(&manifest))), a);
    }

    /// The program runs and prints the greeting (on x86-64 Linux, where it can).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn the_program_runs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hello");
        std::fs::write(&path, hello_elf()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(&path).output().unwrap();
        assert!(out.status.success(), "{:?}", out.status);
        assert_eq!(out.stdout, GREETING.as_bytes());
    }
}
