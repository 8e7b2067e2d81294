//! Hostile and broken model files: each must give a clear error, never a
//! panic, an over-read or a giant allocation.

use sift_engine::kernels::rope::RopeStyle;
use sift_engine::loader::gguf::{self, Value};
use sift_engine::loader::quant::GgmlType;
use sift_engine::model;
use sift_engine::testing::{gguf_bytes, random_weights, tiny_config, write_hf_dir};
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sift-bad-{}-{name}", std::process::id()))
}

fn good_gguf() -> Vec<u8> {
    let c = tiny_config(RopeStyle::Interleaved);
    gguf_bytes(&c, &random_weights(&c, 9, true), GgmlType::Q8_0)
}

fn load_err(bytes: &[u8], name: &str) -> String {
    let path = temp(name);
    std::fs::write(&path, bytes).unwrap();
    let result = model::load(&path);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(_) => panic!("{name}: a broken file loaded"),
        Err(e) => e.to_string(),
    }
}

/// Position right after the name string of tensor `name` in the header.
fn after_name(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend(name.as_bytes());
    bytes.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len()
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = good_gguf();
    // Every prefix in the header, then a sample through the data.
    let header_end = after_name(&bytes, "blk.2.ffn_down.weight") + 40;
    let cuts = (0..header_end).chain((header_end..bytes.len()).step_by(997));
    for cut in cuts {
        let e = load_err(&bytes[..cut], "trunc.gguf");
        assert!(e.contains("invalid model file") || e.contains("truncated"), "cut {cut}: {e}");
    }
}

/// Random damage to the header (bytes flipped, zeroed, set to 0xFF, u64
/// fields set to extremes): each file loads or fails with an error, and
/// none panics. 200,000 such files passed when this was written; the test
/// keeps a fixed sample of them.
#[test]
fn damaged_headers_fail_cleanly() {
    use rand::{Rng, SeedableRng};
    let good = good_gguf();
    let header_end = after_name(&good, "blk.2.ffn_down.weight") + 40;
    let path = temp("damaged.gguf");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut panicked = Vec::new();
    for round in 0..2000 {
        let mut bytes = good.clone();
        for _ in 0..rng.random_range(1..5) {
            let at = rng.random_range(0..header_end - 8);
            match rng.random_range(0..5) {
                0 => bytes[at] ^= 1 << rng.random_range(0..8),
                1 => bytes[at] = 0xFF,
                2 => bytes[at] = 0,
                3 => bytes[at] = rng.random(),
                _ => {
                    let extreme = [u64::MAX, 1 << 31, 1 << 32, 1 << 63, rng.random()][rng.random_range(0..5)];
                    bytes[at..at + 8].copy_from_slice(&extreme.to_le_bytes());
                }
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        if std::panic::catch_unwind(|| model::load(&path).map(|_| ())).is_err() {
            panicked.push(round);
        }
    }
    let _ = std::fs::remove_file(&path);
    assert!(panicked.is_empty(), "rounds that panicked: {panicked:?}");
}

#[test]
fn wrong_magic() {
    let mut bytes = good_gguf();
    bytes[..4].copy_from_slice(b"GGML");
    assert!(load_err(&bytes, "magic.gguf").contains("wrong magic"));
}

#[test]
fn absurd_counts() {
    let mut bytes = good_gguf();
    bytes[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(load_err(&bytes, "count.gguf").contains("tensor count"));
    let mut bytes = good_gguf();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(load_err(&bytes, "kv.gguf").contains("metadata count"));
}

#[test]
fn absurd_dimensions_and_offsets() {
    let name = "blk.0.attn_q.weight";
    let mut bytes = good_gguf();
    let p = after_name(&bytes, name);
    bytes[p..p + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(load_err(&bytes, "ndims.gguf").contains("dimensions"));

    let mut bytes = good_gguf();
    bytes[p + 4..p + 12].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = load_err(&bytes, "dims.gguf");
    assert!(e.contains(name), "{e}");

    let mut bytes = good_gguf();
    bytes[p + 4..p + 12].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = load_err(&bytes, "dims2.gguf");
    assert!(e.contains(name), "{e}");

    // n_dims (4) + 2 dims (16) + type (4), then the offset.
    let mut bytes = good_gguf();
    bytes[p + 24..p + 32].copy_from_slice(&(u64::MAX - 64).to_le_bytes());
    let e = load_err(&bytes, "offset.gguf");
    assert!(e.contains("claims bytes"), "{e}");
}

#[test]
fn header_claims_more_than_the_file_holds() {
    let bytes = good_gguf();
    let e = load_err(&bytes[..bytes.len() - 100], "short.gguf");
    assert!(e.contains("claims bytes") && e.contains("truncated"), "{e}");
}

#[test]
fn unknown_architecture_and_unsupported_type() {
    let meta = [("general.architecture", Value::Str("gptj".into()))];
    let e = load_err(&gguf::write(&meta, &[]), "arch.gguf");
    assert!(e.contains("unsupported model architecture 'gptj'"), "{e}");

    // An IQ4_NL (type 20), a TQ1_0 (34) and an unknown type (77) where we
    // expect a matrix: refused by name, before anything is uploaded.
    for (id, name) in [(20u32, "IQ4_NL"), (34, "TQ1_0"), (77, "#77")] {
        let mut bytes = good_gguf();
        let p = after_name(&bytes, "blk.1.ffn_up.weight");
        bytes[p + 20..p + 24].copy_from_slice(&id.to_le_bytes());
        let e = load_err(&bytes, "iq.gguf");
        assert!(e.contains(&format!("unsupported tensor type {name} in tensor blk.1.ffn_up.weight")), "{e}");
    }
}

#[test]
fn rows_that_are_not_whole_blocks() {
    // The tiny model's rows are 64 wide: not whole Q4_K blocks of 256.
    let mut bytes = good_gguf();
    let p = after_name(&bytes, "blk.1.ffn_up.weight");
    bytes[p + 20..p + 24].copy_from_slice(&12u32.to_le_bytes());
    let e = load_err(&bytes, "q4k-rows.gguf");
    assert!(e.contains("tensor 'blk.1.ffn_up.weight': its rows of 64 are not a whole number of Q4_K's blocks of 256"), "{e}");
}

#[test]
fn truncated_k_quant_data() {
    let c = sift_engine::testing::tiny_kquant_config();
    let bytes = sift_engine::testing::gguf_bytes(&c, &random_weights(&c, 4, true), GgmlType::Q4K);
    let e = load_err(&bytes[..bytes.len() - 50], "q4k-short.gguf");
    assert!(e.contains("claims bytes") && e.contains("truncated"), "{e}");
}

#[test]
fn missing_tensor_and_wrong_shape() {
    let c = tiny_config(RopeStyle::Neox);
    let w = random_weights(&c, 5, true);
    let dir = temp("hf-bad");
    let _ = std::fs::remove_dir_all(&dir);
    write_hf_dir(&dir, &c, &w).unwrap();
    // Claim a wider model than the tensors are.
    let cfg_path = dir.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap().replace("\"intermediate_size\":96", "\"intermediate_size\":128");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let e = model::load(&dir).err().expect("wrong shape must fail").to_string();
    assert!(e.contains("has shape") && e.contains("ffn_gate"), "{e}");
    // A truncated safetensors file.
    let st = dir.join("model.safetensors");
    let data = std::fs::read(&st).unwrap();
    std::fs::write(&st, &data[..data.len() / 2]).unwrap();
    let e = model::load(&dir).err().expect("truncated safetensors must fail").to_string();
    assert!(e.contains("bad safetensors"), "{e}");
    // Garbage header length.
    std::fs::write(&st, u64::MAX.to_le_bytes()).unwrap();
    let e = model::load(&dir).err().expect("garbage safetensors must fail").to_string();
    assert!(e.contains("bad safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    let e = model::load(&dir).err().unwrap().to_string();
    assert!(e.contains("no such file"), "{e}");
}

/// Found by `fuzz/hf_dir`: a tokenizer.json whose decoder is not valid JSON
/// made the tokenizers crate panic (an `expect` in its decoder). It is an
/// error naming the file, as is any other damage to it.
#[test]
fn malformed_tokenizer_json_is_an_error_not_a_panic() {
    let c = tiny_config(RopeStyle::Neox);
    let dir = tempfile::Builder::new().prefix("sift-bad-tokenizer-").tempdir().unwrap();
    write_hf_dir(dir.path(), &c, &random_weights(&c, 2, true)).unwrap();
    let path = dir.path().join("tokenizer.json");
    let good = std::fs::read_to_string(&path).unwrap();
    let at = good.find("\"decoder\"").expect("the tiny tokenizer has a decoder");
    let broken_decoder = format!("{}\"decoder\":{{\"type\":\"ByteLevel\",\"trim_offsets\"xtrue}},{}", &good[..at], &good[at..].split_once("},").unwrap().1);
    for (what, text) in [("the fuzzer's input", broken_decoder.as_str()), ("cut short", &good[..good.len() / 2]), ("a model that is not an object", r#"{"model": 5}"#)] {
        std::fs::write(&path, text).unwrap();
        let e = model::load(dir.path()).err().unwrap_or_else(|| panic!("{what}: loaded")).to_string();
        assert!(e.contains("tokenizer.json") && e.contains("tokenizer"), "{what}: {e}");
    }
}
