//! `sift-studio --bench --json` runs headless (no display) and emits valid
//! JSON with adapter info, tokens/s dense and sparse at every AR, per-kernel
//! GPU times where the adapter has timestamp queries, and GPU memory.

use sift_engine::kernels::rope::RopeStyle;
use sift_engine::loader::quant::GgmlType;
use sift_engine::testing::{gguf_bytes, random_weights, tiny_config};
use std::io::Write;
use std::process::Command;

#[test]
fn bench_json_runs_headless_with_every_field() {
    let c = tiny_config(RopeStyle::Neox);
    let mut file = tempfile::Builder::new().prefix("sift-studio-bench-").suffix(".gguf").tempfile().unwrap();
    file.write_all(&gguf_bytes(&c, &random_weights(&c, 22, true), GgmlType::Q8_0)).unwrap();
    let path = file.into_temp_path();
    let out = Command::new(env!("CARGO_BIN_EXE_sift-studio"))
        .args(["--bench", "--json", "--decode-tokens", "3", "-m", path.to_str().unwrap()])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert!(!v["adapter"]["name"].as_str().unwrap().is_empty());
    assert!(v["adapter"]["software"].is_boolean() && v["adapter"]["backend"].is_string());
    let positive = |x: &serde_json::Value| x.as_f64().is_some_and(|f| f > 0.0 && f.is_finite());
    assert!(positive(&v["dense"]["prefill_tokens_per_second"]) && positive(&v["dense"]["decode_tokens_per_second"]));
    let rows = v["sparse"].as_array().unwrap();
    let ars: Vec<f64> = rows.iter().map(|r| r["ar"].as_f64().unwrap()).collect();
    assert_eq!(ars, [1.0, 0.5, 0.3, 0.2, 0.1]);
    for r in rows {
        for k in ["dense_tokens_per_second", "sparse_tokens_per_second", "sparse_with_heads_tokens_per_second", "speedup"] {
            assert!(positive(&r[k]), "{k} in {r}");
        }
    }
    if v["adapter"]["timestamp_queries"].as_bool().unwrap() {
        let kernels = v["dense"]["decode_kernel_seconds"].as_array().unwrap();
        assert!(kernels.iter().any(|k| k[0] == "lm_head"), "{kernels:?}");
        // Prompt mode decodes its mask compacted: the MLP's two projections over the active neurons.
        let sparse = rows[3]["sparse_kernel_seconds"].as_array().unwrap();
        assert!(["sparse_gate_up", "sparse_down"].iter().all(|role| sparse.iter().any(|k| k[0] == *role)), "{sparse:?}");
    }
    assert!(v["peak_gpu_memory_bytes"].as_u64().unwrap() > 100_000);
}
