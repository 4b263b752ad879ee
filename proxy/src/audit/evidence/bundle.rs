//! The bundle on disk: files written once each, and a `MANIFEST` of their SHA-256 hashes
//! (`<hex>  <name>` lines, sorted by name, as `sha256sum -c` reads them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "MANIFEST";

pub struct Bundle {
    dir: PathBuf,
    hashes: BTreeMap<String, String>,
}

impl Bundle {
    /// A new bundle in `dir`, which must be absent or empty (an old bundle is not mixed in).
    pub fn create(dir: &Path) -> anyhow::Result<Bundle> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        anyhow::ensure!(
            std::fs::read_dir(dir)?.next().is_none(),
            "{} is not empty",
            dir.display()
        );
        Ok(Bundle {
            dir: dir.to_path_buf(),
            hashes: BTreeMap::new(),
        })
    }

    /// Writes `name` (a path inside the bundle, `/`-separated).
    pub fn bytes(&mut self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(
            !name
                .split('/')
                .any(|p| p.is_empty() || p == ".." || p == ".")
                && !self.hashes.contains_key(name),
            "bad or repeated file name in the bundle: {name}"
        );
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.hashes
            .insert(name.to_string(), hex::encode(Sha256::digest(bytes)));
        Ok(())
    }

    pub fn text(&mut self, name: &str, text: &str) -> anyhow::Result<()> {
        self.bytes(name, text.as_bytes())
    }

    /// Pretty JSON with a final newline (struct members in declaration order, maps sorted).
    pub fn json(&mut self, name: &str, value: &impl serde::Serialize) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value)?;
        bytes.push(b'\n');
        self.bytes(name, &bytes)
    }

    /// One compact JSON value per line.
    pub fn json_lines<T: serde::Serialize>(
        &mut self,
        name: &str,
        values: &[T],
    ) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        for v in values {
            serde_json::to_writer(&mut bytes, v)?;
            bytes.push(b'\n');
        }
        self.bytes(name, &bytes)
    }

    /// Writes the manifest: the bundle is complete.
    pub fn finish(self) -> anyhow::Result<()> {
        let manifest: String = self
            .hashes
            .iter()
            .map(|(name, hash)| format!("{hash}  {name}\n"))
            .collect();
        std::fs::write(self.dir.join(MANIFEST), manifest)?;
        Ok(())
    }
}

/// Checks the bundle in `dir` against its manifest: each problem (a file altered, missing,
/// or not in the manifest) as a line.
pub fn verify(dir: &Path) -> anyhow::Result<Vec<String>> {
    let manifest = std::fs::read_to_string(dir.join(MANIFEST))
        .with_context(|| format!("reading {}", dir.join(MANIFEST).display()))?;
    let mut listed = BTreeMap::new();
    for (i, line) in manifest.lines().enumerate() {
        let (hash, name) = line
            .split_once("  ")
            .with_context(|| format!("{MANIFEST}:{}: not `<sha256>  <file>`", i + 1))?;
        listed.insert(name.to_string(), hash.to_string());
    }
    let mut problems = Vec::new();
    let present = files(dir, dir)?;
    for (name, hash) in &listed {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == *hash => {}
            Ok(_) => problems.push(format!("{name}: its SHA-256 is not the manifest's")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("{name}: missing"))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
    }
    for name in present {
        if name != MANIFEST && !listed.contains_key(&name) {
            problems.push(format!("{name}: not in the manifest"));
        }
    }
    Ok(problems)
}

/// The files under `dir`, as `/`-separated names relative to `root`, sorted.
fn files(root: &Path, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files(root, &path)?);
        } else {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_finds_an_altered_a_missing_and_an_added_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Bundle::create(dir.path()).unwrap();
        b.text("a.txt", "a").unwrap();
        b.text("sessions/b.txt", "b").unwrap();
        b.json("c.json", &serde_json::json!({"x": 1})).unwrap();
        b.finish().unwrap();
        assert!(verify(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join("a.txt"), "A").unwrap();
        std::fs::remove_file(dir.path().join("sessions/b.txt")).unwrap();
        std::fs::write(dir.path().join("d.txt"), "d").unwrap();
        assert_eq!(
            verify(dir.path()).unwrap(),
            [
                "a.txt: its SHA-256 is not the manifest's",
                "sessions/b.txt: missing",
                "d.txt: not in the manifest"
            ]
        );
        assert!(Bundle::create(dir.path()).is_err(), "not empty");
        let mut again = Bundle::create(&dir.path().join("new")).unwrap();
        again.text("x", "1").unwrap();
        assert!(again.text("x", "2").is_err());
        assert!(again.text("../y", "2").is_err());
    }
}
