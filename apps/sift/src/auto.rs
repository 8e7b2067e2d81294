//! `--sparsity auto`: the fastest setting `sift frontier` measured for the
//! loaded model whose continuation perplexity stays within 3% of dense. Each
//! frontier run records its rows in the cache, per model (weights read the
//! same way: `GpuModel::numerics_key`); auto picks from that record, and
//! decodes dense when no measured setting is faster than dense there, or
//! when the model was never measured. It always says what it chose and why.

use sift_engine::output::write_atomic;
use crate::sparsity::{Sparsity, SparsityArgs};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use sift_engine::model::GpuModel;
use std::path::{Path, PathBuf};

/// The perplexity rise auto allows.
pub const TOLERANCE: f64 = 0.03;

/// Where the frontier rows of `model` are kept.
pub fn record_path(model: &GpuModel) -> PathBuf {
    let key: String = model.numerics_key().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    sift_engine::default_model::cache_dir().join("frontier").join(format!("{key}.json"))
}

/// Adds a frontier run's rows to the model's record (a setting measured
/// again replaces its old row); thresholds paths are made absolute so the
/// record works from any directory.
pub fn record(model: &GpuModel, rows: &[Value]) -> Result<PathBuf> {
    let path = record_path(model);
    let mut kept: Vec<Value> = read_rows(&path).unwrap_or_default();
    for row in rows {
        let mut row = row.clone();
        if let Some(file) = row["setting"].as_str().and_then(|s| s.strip_prefix("threshold:")) {
            let abs = std::fs::canonicalize(file).unwrap_or_else(|_| PathBuf::from(file));
            row["setting"] = json!(format!("threshold:{}", abs.display()));
        }
        // Per-kernel profiles are not needed to choose.
        if let Some(o) = row.as_object_mut() {
            o.retain(|k, _| !k.ends_with("kernel_seconds"));
        }
        kept.retain(|r| r["setting"] != row["setting"]);
        kept.push(row);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(&path, serde_json::to_string_pretty(&json!({ "model": model.numerics_key(), "rows": kept }))?.as_bytes())?;
    Ok(path)
}

fn read_rows(path: &Path) -> Option<Vec<Value>> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["rows"].as_array().cloned()
}

/// The fastest row whose perplexity rises at most `rise` (a fraction).
pub fn fastest_within(rows: &[Value], rise: f64) -> Option<&Value> {
    rows.iter().filter(|r| r["ratio"].as_f64().is_some_and(|x| x <= 1.0 + rise)).max_by(|a, b| a["speedup"].as_f64().unwrap_or(0.0).total_cmp(&b["speedup"].as_f64().unwrap_or(0.0)))
}

/// The row auto takes: the fastest within the tolerance, if it beats dense.
pub fn choose(rows: &[Value]) -> Option<&Value> {
    fastest_within(rows, TOLERANCE).filter(|r| r["speedup"].as_f64().is_some_and(|s| s > 1.0))
}

/// `args` as they are, or for `auto` the setting chosen for `model` (said on stderr).
pub fn resolve(model: &GpuModel, args: &SparsityArgs) -> Result<SparsityArgs> {
    if args.sparsity != Sparsity::Auto {
        return Ok(args.clone());
    }
    let path = record_path(model);
    let Some(rows) = read_rows(&path) else {
        eprintln!("sift: --sparsity auto: no frontier measured for this model yet (run `sift frontier` to measure one); decoding dense");
        return Ok(SparsityArgs::off());
    };
    match choose(&rows) {
        Some(row) => {
            let spec = row["setting"].as_str().unwrap_or("off");
            let chosen = SparsityArgs::parse_setting(spec).with_context(|| format!("the setting recorded in {}", path.display()))?;
            eprintln!(
                "sift: --sparsity auto: {spec} ({:.2}x dense decode, continuation perplexity +{:.2}%, measured by `sift frontier`)",
                row["speedup"].as_f64().unwrap_or(f64::NAN),
                100.0 * (row["ratio"].as_f64().unwrap_or(f64::NAN) - 1.0)
            );
            Ok(SparsityArgs { ig_steps: args.ig_steps, ..chosen })
        }
        None => {
            let best = fastest_within(&rows, TOLERANCE).and_then(|r| r["speedup"].as_f64());
            eprintln!(
                "sift: --sparsity auto: of the {} settings measured for this model, none decodes faster than dense within a {:.0}% perplexity rise (the fastest that stays within it: {}); decoding dense",
                rows.len(),
                TOLERANCE * 100.0,
                best.map_or("none".to_string(), |b| format!("{b:.2}x"))
            );
            Ok(SparsityArgs::off())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_fastest_within_the_tolerance_that_beats_dense() {
        let rows = vec![
            json!({"setting": "a", "ratio": 1.001, "speedup": 0.5}),
            json!({"setting": "b", "ratio": 1.02, "speedup": 1.1}),
            json!({"setting": "c", "ratio": 1.025, "speedup": 1.2}),
            json!({"setting": "d", "ratio": 1.5, "speedup": 1.9}),
        ];
        assert_eq!(choose(&rows).unwrap()["setting"], "c");
        assert!(choose(&rows[..1]).is_none(), "slower than dense: dense");
        assert!(choose(&rows[3..]).is_none(), "too costly: dense");
    }
}
