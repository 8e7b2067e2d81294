//! Shared pieces of the end-to-end tests: the default model loaded once, the
//! llama.cpp golden fixtures, and the path of the shared evaluation data.

use sift_engine::attribution::Attributor;
use sift_engine::model::{self, GpuModel, ModelOptions};
use sift_engine::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

pub struct RealModel {
    pub model: GpuModel,
    pub tokenizer: Tokenizer,
    pub attributor: Attributor,
}

/// The default model (SmolLM2-135M-Instruct Q4_1), fetched and uploaded once per test binary.
pub fn real_model() -> &'static Mutex<RealModel> {
    static MODEL: OnceLock<Mutex<RealModel>> = OnceLock::new();
    MODEL.get_or_init(|| Mutex::new(real_model_with(ModelOptions::default())))
}

/// The default model uploaded with `options`, sparse decoding enabled.
pub fn real_model_with(options: ModelOptions) -> RealModel {
    let path = sift_engine::default_model::path().expect("default model (run .ci/run or `sift generate` once)");
    let loaded = model::load(&path).expect("default model loads");
    let mut model = GpuModel::with_options(sift_engine::testing::gpu(), &loaded.config, &loaded.weights, 1024, options).unwrap();
    let attributor = Attributor::new(&model, &loaded.weights).unwrap();
    model.enable_sparse(&loaded.weights).unwrap();
    RealModel { model, tokenizer: loaded.tokenizer, attributor }
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures_dir().join("smollm2_golden.json")).expect("golden fixture");
    serde_json::from_str(&text).unwrap()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// `../shared/data` beside the repository (override with SIFT_DATA).
pub fn data_dir() -> PathBuf {
    std::env::var_os("SIFT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}
