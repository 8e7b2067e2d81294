//! Writes the committed seed corpora, `fuzz/seeds/<target>/`: small valid
//! inputs from which the fuzzer mutates. Run from the repository root:
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --example make_seeds`.

use rand::{Rng, SeedableRng};
use sift_engine::loader::gguf::{self, Value};
use sift_engine::loader::quant::{quantize, GgmlType};
use sift_engine::kernels::rope::RopeStyle;
use sift_engine::model::Config;
use sift_engine::testing;
use std::path::Path;

const ALL_TYPES: [GgmlType; 14] = [
    GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
    GgmlType::Q8_0, GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K, GgmlType::Q8K,
];

fn main() -> std::io::Result<()> {
    let root = Path::new("fuzz/seeds");
    let put = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)
    };
    // The smallest model the loader takes: one layer, 32 wide.
    let c = Config { n_layers: 1, dim: 32, ffn_dim: 64, n_heads: 2, n_kv_heads: 1, head_dim: 16, rot_dim: 16, ..testing::tiny_config(RopeStyle::Interleaved) };
    let w = testing::random_weights(&c, 7, true);
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q5_0] {
        put("gguf", &format!("model-{}", ty.name()), &testing::gguf_bytes(&c, &w, ty))?;
    }
    put("gguf", "every-type", &every_type())?;
    put("gguf_tokenizer", "byte-level-bpe", &[byte_level_vocab(), b"Hello, world! 123".to_vec()].concat())?;
    put("gguf_tokenizer", "sentencepiece", &[sentencepiece_vocab(), "Hello \u{1F600} wörld".as_bytes().to_vec()].concat())?;

    let dir = std::env::temp_dir().join(format!("sift-seeds-{}", std::process::id()));
    testing::write_hf_dir(&dir, &c, &w)?;
    let read = |name: &str| std::fs::read(dir.join(name));
    let (config, tokenizer, tensors) = (read("config.json")?, read("tokenizer.json")?, read("model.safetensors")?);
    std::fs::remove_dir_all(&dir)?;
    put("hf_dir", "tiny-llama", &sift_fuzz::join3([&config, &tokenizer, &tensors]))?;

    let model = r#"{"fingerprint": "5f3a9c", "n_layers": 2, "ffn_dim": 4, "n_heads": 2}"#;
    put("sparse_files", "thresholds-cett.json", format!(r#"{{"format": "sift-thresholds-1", "model": {model}, "rule": "cett", "thresholds": [0.5, 0.25], "calibration": {{"target": 0.01}}}}"#).as_bytes())?;
    put("sparse_files", "thresholds-weighted.json", format!(r#"{{"format": "sift-thresholds-1", "model": {model}, "rule": "weighted", "thresholds": [0.5, 0.25], "weights": [1, 0.5, 2, 0, 1, 1, 3, 0.25]}}"#).as_bytes())?;
    put("sparse_files", "mask.json", format!(r#"{{"format": "sift-mask-1", "model": {model}, "neurons": [[0, 3], [1]], "heads": [[1], [0, 1]], "source": "hand"}}"#).as_bytes())?;

    // Made-up questions in TruthfulQA's columns (the real data stays in ../shared).
    let csv = "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n\
               Adversarial,Misconceptions,What colour is the sky on a clear day?,Blue,Blue; It is blue,Green; Red,https://example.org\n\
               Non-Adversarial,Fiction,\"Who wrote \"\"the\"\" book, then?\",Nobody knows,Nobody knows; Unknown,A cat; A dog,\n";
    put("truthfulqa_csv", "two-questions.csv", csv.as_bytes())?;
    check_seeds_load(root);
    Ok(())
}

/// Every seed is an input Sift accepts, so that fuzzing starts from deep
/// inside each reader rather than at its first check.
fn check_seeds_load(root: &Path) {
    use sift_engine::model::sparse::{MaskFile, Thresholds};
    let files = |target: &str| {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(target)).unwrap().map(|e| e.unwrap().path()).collect();
        paths.sort();
        paths
    };
    for path in files("gguf").into_iter().filter(|p| !p.ends_with("every-type")) {
        sift_engine::model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let every = gguf::GgufFile::open(&root.join("gguf/every-type")).unwrap();
    for info in &every.tensors {
        sift_engine::loader::TensorSource::tensor(&every, &info.name).unwrap().expect("listed");
    }
    for path in files("gguf_tokenizer") {
        let file = gguf::GgufFile::open(&path).unwrap();
        let t = sift_engine::tokenizer::Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(t.encode("Hello").unwrap().len() > 1, "{}", path.display());
    }
    let dir = std::env::temp_dir().join(format!("sift-seeds-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let [config, tokenizer, tensors] = sift_fuzz::split3(&std::fs::read(root.join("hf_dir/tiny-llama")).unwrap()).map(<[u8]>::to_vec);
    for (name, bytes) in [("config.json", config), ("tokenizer.json", tokenizer), ("model.safetensors", tensors)] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    sift_engine::model::load(&dir).expect("the HF seed loads");
    std::fs::remove_dir_all(&dir).unwrap();
    for path in files("sparse_files") {
        let ok = if path.ends_with("mask.json") { MaskFile::load(&path).map(|_| ()) } else { Thresholds::load(&path).map(|_| ()) };
        ok.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(sift_engine::eval::truthfulqa::load(&root.join("truthfulqa_csv/two-questions.csv")).unwrap().len(), 2);
}

/// One 256-weight tensor of every type Sift reads: quantized where the
/// engine has a test quantizer, random blocks (any scales) where not.
fn every_type() -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let tensors: Vec<_> = ALL_TYPES
        .iter()
        .map(|&ty| {
            let bytes = if matches!(ty, GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q5K | GgmlType::Q8K) {
                (0..ty.bytes_for(256).expect("256 is whole blocks")).map(|_| rng.random::<u8>()).collect()
            } else {
                quantize(ty, &(0..256).map(|_| rng.random_range(-2.0f32..2.0)).collect::<Vec<_>>())
            };
            (format!("t.{}", ty.name()), vec![256], ty, bytes)
        })
        .collect();
    gguf::write(&[("general.architecture", Value::Str("llama".into()))], &tensors)
}

/// GGUF metadata of a byte-level BPE vocabulary with two merges, no tensors.
fn byte_level_vocab() -> Vec<u8> {
    let mut tokens = testing::byte_level_alphabet();
    tokens.extend(["He".to_string(), "ll".to_string(), "<|endoftext|>".to_string()]);
    let types = (0..tokens.len()).map(|i| Value::I32(if i + 1 == tokens.len() { 3 } else { 1 })).collect();
    let metadata = vec![
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Value::Str("llama-bpe".into())),
        ("tokenizer.ggml.merges", Value::Array(vec![Value::Str("H e".into()), Value::Str("l l".into())])),
        ("tokenizer.ggml.eos_token_id", Value::U32(tokens.len() as u32 - 1)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::Str).collect())),
    ];
    gguf::write(&metadata, &[])
}

/// GGUF metadata of a SentencePiece vocabulary: specials, byte fallback
/// tokens and a few pieces with scores.
fn sentencepiece_vocab() -> Vec<u8> {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(["▁", "▁H", "el", "lo", "▁Hel", "▁Hello", "w", "ö", "r", "l", "d"].map(String::from));
    let n = tokens.len();
    let scores = (0..n).map(|i| Value::F32(-(i as f32))).collect();
    let types = (0..n).map(|i| Value::I32(match i { 0 => 2, 1 | 2 => 3, 3..=258 => 6, _ => 1 })).collect();
    let metadata = vec![
        ("tokenizer.ggml.model", Value::Str("llama".into())),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(true)),
        ("tokenizer.ggml.scores", Value::Array(scores)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::Str).collect())),
    ];
    gguf::write(&metadata, &[])
}
