//! Helpers for tests: a shared GPU context and a tiny random-weight Llama model
//! written as a Hugging Face directory or as GGUF with quantized tensors.

use crate::gpu::{AdapterRequest, GpuContext};
use crate::kernels::rope::RopeStyle;
use crate::loader::gguf::{self, Value};
use crate::loader::quant::{quantize, GgmlType};
use crate::model::{Architecture, Config, LayerWeights, Weights};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// One device for the whole test process (creating one per test is slow on lavapipe).
pub fn gpu() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| open_test_device(false)).clone()
}

/// The same adapter opened without subgroup operations, for the kernels'
/// portable path.
pub fn gpu_without_subgroups() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| open_test_device(true)).clone()
}

fn open_test_device(no_subgroups: bool) -> Arc<GpuContext> {
    let request = AdapterRequest { name: std::env::var("SIFT_ADAPTER").ok(), backend: None, no_subgroups };
    GpuContext::new(&request).unwrap_or_else(|e| panic!("tests need a wgpu adapter (lavapipe is enough): {e}"))
}

pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// A small Llama with GQA (4 query heads, 2 KV heads), head dim 16.
pub fn tiny_config(style: RopeStyle) -> Config {
    Config {
        architecture: Architecture::Llama,
        n_layers: 3,
        dim: 64,
        ffn_dim: 96,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        rot_dim: 16,
        vocab_size: TINY_VOCAB,
        rope_theta: 10000.0,
        rope_freq_divisors: None,
        rope_style: style,
        rms_eps: 1e-5,
        context_length: 256,
    }
}

/// 256 byte-level symbols plus end-of-text and 31 padding tokens.
pub const TINY_VOCAB: usize = 288;

pub fn random_weights(c: &Config, seed: u64, tied: bool) -> Weights {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut m = |rows: usize, cols: usize| -> Vec<f32> {
        let scale = 1.0 / (cols as f32).sqrt();
        (0..rows * cols).map(|_| rng.random_range(-1.0f32..1.0) * scale * 1.7).collect()
    };
    let norm = |rng: &mut rand::rngs::StdRng, n: usize| (0..n).map(|_| rng.random_range(0.8f32..1.2)).collect::<Vec<_>>();
    let layers = (0..c.n_layers)
        .map(|_| LayerWeights {
            attn_norm: vec![],
            wq: m(c.q_dim(), c.dim),
            wk: m(c.kv_dim(), c.dim),
            wv: m(c.kv_dim(), c.dim),
            wo: m(c.dim, c.q_dim()),
            ffn_norm: vec![],
            w_gate: m(c.ffn_dim, c.dim),
            w_up: m(c.ffn_dim, c.dim),
            w_down: m(c.dim, c.ffn_dim),
        })
        .collect::<Vec<_>>();
    let embed: Vec<f32> = m(c.vocab_size, c.dim).iter().map(|v| v * 8.0).collect();
    let lm_head = if tied { None } else { Some(m(c.vocab_size, c.dim)) };
    let mut w = Weights { embed, layers, out_norm: vec![], lm_head };
    let mut rng2 = rand::rngs::StdRng::seed_from_u64(seed + 1);
    w.out_norm = norm(&mut rng2, c.dim);
    for l in &mut w.layers {
        l.attn_norm = norm(&mut rng2, c.dim);
        l.ffn_norm = norm(&mut rng2, c.dim);
    }
    w
}

/// GPT-2's byte-to-unicode table: printable stand-ins for all 256 bytes.
pub fn byte_level_alphabet() -> Vec<String> {
    let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut extra = 0;
    let mut map = vec![0u32; 256];
    for b in 0..256u32 {
        if printable.contains(&b) {
            map[b as usize] = b;
        } else {
            map[b as usize] = 256 + extra;
            extra += 1;
        }
    }
    map.iter().map(|&c| char::from_u32(c).unwrap().to_string()).collect()
}

fn tiny_tokens() -> Vec<String> {
    let mut t = byte_level_alphabet();
    t.push("<|endoftext|>".into());
    t.extend((t.len()..TINY_VOCAB).map(|i| format!("<pad{i}>")));
    t
}

/// Tensors in GGUF naming with PyTorch shapes.
fn named_tensors<'a>(c: &Config, w: &'a Weights) -> Vec<(String, Vec<usize>, &'a [f32])> {
    let mut t = vec![
        ("token_embd.weight".to_string(), vec![c.vocab_size, c.dim], w.embed.as_slice()),
        ("output_norm.weight".to_string(), vec![c.dim], w.out_norm.as_slice()),
    ];
    if let Some(h) = &w.lm_head {
        t.push(("output.weight".into(), vec![c.vocab_size, c.dim], h.as_slice()));
    }
    for (i, l) in w.layers.iter().enumerate() {
        let n = |p: &str| format!("blk.{i}.{p}.weight");
        t.extend([
            (n("attn_norm"), vec![c.dim], l.attn_norm.as_slice()),
            (n("attn_q"), vec![c.q_dim(), c.dim], l.wq.as_slice()),
            (n("attn_k"), vec![c.kv_dim(), c.dim], l.wk.as_slice()),
            (n("attn_v"), vec![c.kv_dim(), c.dim], l.wv.as_slice()),
            (n("attn_output"), vec![c.dim, c.q_dim()], l.wo.as_slice()),
            (n("ffn_norm"), vec![c.dim], l.ffn_norm.as_slice()),
            (n("ffn_gate"), vec![c.ffn_dim, c.dim], l.w_gate.as_slice()),
            (n("ffn_up"), vec![c.ffn_dim, c.dim], l.w_up.as_slice()),
            (n("ffn_down"), vec![c.dim, c.ffn_dim], l.w_down.as_slice()),
        ]);
    }
    t
}

/// Writes `config.json`, `model.safetensors` (F32) and `tokenizer.json`.
pub fn write_hf_dir(dir: &Path, c: &Config, w: &Weights) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
        "hidden_size": c.dim, "intermediate_size": c.ffn_dim, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "vocab_size": c.vocab_size, "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_eps,
        "max_position_embeddings": c.context_length, "tie_word_embeddings": w.lm_head.is_none(),
        "eos_token_id": 256,
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let tensors = named_tensors(c, w);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let hf = crate::loader::hf::hf_name(name).expect("every tiny tensor has an HF name");
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytemuck::cast_slice(data)).unwrap();
            (hf, view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).map_err(std::io::Error::other)?;
    let vocab: serde_json::Map<String, serde_json::Value> =
        tiny_tokens().into_iter().enumerate().map(|(i, t)| (t, serde_json::json!(i))).collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string())
}

/// GGUF bytes of the tiny model: matrices in `matrix_type`, norms in F32.
pub fn gguf_bytes(c: &Config, w: &Weights, matrix_type: GgmlType) -> Vec<u8> {
    gguf_bytes_with(c, w, |_| matrix_type)
}

/// A tiny Llama whose rows are whole K-quant blocks of 256.
pub fn tiny_kquant_config() -> Config {
    Config { n_layers: 2, dim: 256, ffn_dim: 512, n_heads: 4, n_kv_heads: 2, head_dim: 64, rot_dim: 64, ..tiny_config(RopeStyle::Interleaved) }
}

/// The tensor types of a `Q4_K_M` file as llama.cpp mixes them: Q6_K for
/// the embedding and the MLP's down projection, Q5_0 for V, Q4_K elsewhere.
pub fn q4_k_m_mix(name: &str) -> GgmlType {
    if name.contains("token_embd") || name.contains("ffn_down") {
        GgmlType::Q6K
    } else if name.contains("attn_v") {
        GgmlType::Q5_0
    } else {
        GgmlType::Q4K
    }
}

/// GGUF bytes of the tiny model: each matrix in the type `matrix_type`
/// names for it, norms in F32.
pub fn gguf_bytes_with(c: &Config, w: &Weights, matrix_type: impl Fn(&str) -> GgmlType) -> Vec<u8> {
    gguf_bytes_plus(c, w, matrix_type, vec![], vec![])
}

/// A tensor as [`gguf::write`] takes it: name, shape, type, bytes.
pub type RawTensor = (String, Vec<usize>, GgmlType, Vec<u8>);

/// Like [`gguf_bytes_with`], with more metadata (replacing keys of the same
/// name) and more tensors: files that say more than the tiny model.
pub fn gguf_bytes_plus(c: &Config, w: &Weights, matrix_type: impl Fn(&str) -> GgmlType, more_metadata: Vec<(&str, Value)>, more_tensors: Vec<RawTensor>) -> Vec<u8> {
    let mut tensors: Vec<RawTensor> = named_tensors(c, w)
        .into_iter()
        .map(|(name, shape, data)| {
            let ty = if shape.len() == 1 { GgmlType::F32 } else { matrix_type(&name) };
            let bytes = quantize(ty, data);
            (name, shape, ty, bytes)
        })
        .collect();
    let u = |v: usize| Value::U32(v as u32);
    let metadata = vec![
        ("general.architecture", Value::Str("llama".into())),
        ("llama.block_count", u(c.n_layers)),
        ("llama.embedding_length", u(c.dim)),
        ("llama.feed_forward_length", u(c.ffn_dim)),
        ("llama.attention.head_count", u(c.n_heads)),
        ("llama.attention.head_count_kv", u(c.n_kv_heads)),
        ("llama.rope.freq_base", Value::F32(c.rope_theta)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(c.rms_eps)),
        ("llama.context_length", u(c.context_length)),
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Value::Str("smollm".into())),
        ("tokenizer.ggml.tokens", Value::Array(tiny_tokens().into_iter().map(Value::Str).collect())),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.token_type", Value::Array((0..TINY_VOCAB).map(|i| Value::I32(if i == 256 { 3 } else { 1 })).collect())),
        ("tokenizer.ggml.eos_token_id", Value::U32(256)),
    ];
    let mut metadata: Vec<(&str, Value)> = metadata.into_iter().filter(|(k, _)| more_metadata.iter().all(|(m, _)| m != k)).collect();
    metadata.extend(more_metadata);
    tensors.extend(more_tensors);
    gguf::write(&metadata, &tensors)
}
