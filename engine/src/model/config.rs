//! Model hyper-parameters, read from GGUF metadata or `config.json`, and checked
//! for sanity before any buffer is sized from them.

use crate::error::{Result, SiftError};
use crate::kernels::attention::MAX_HEAD_DIM;
use crate::kernels::rope::RopeStyle;
use crate::loader::gguf::GgufFile;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// RMSNorm, RoPE, grouped-query attention, SwiGLU (SmolLM2, TinyLlama, Llama 3.2).
    Llama,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub architecture: Architecture,
    pub n_layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rot_dim: usize,
    pub vocab_size: usize,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    /// Longest context the model was trained for.
    pub context_length: usize,
}

impl Config {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Config> {
        let arch = f.architecture()?;
        if arch != "llama" {
            return Err(SiftError::UnsupportedArchitecture(arch));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let n_heads = f.get_u64(&key("attention.head_count"))? as usize;
        let dim = f.get_u64(&key("embedding_length"))? as usize;
        let head_dim = f.get_u64(&key("attention.key_length")).unwrap_or((dim / n_heads.max(1)) as u64) as usize;
        let vocab_size = match f.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
            Some(v) => v as usize,
            None => f
                .tensors
                .iter()
                .find(|t| t.name == "token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| SiftError::MissingTensor("token_embd.weight".into()))?,
        };
        let float = |k: &str, default: f64| f.get(&key(k)).and_then(|v| v.as_f64()).unwrap_or(default) as f32;
        let cfg = Config {
            architecture: Architecture::Llama,
            n_layers: f.get_u64(&key("block_count"))? as usize,
            dim,
            ffn_dim: f.get_u64(&key("feed_forward_length"))? as usize,
            n_heads,
            n_kv_heads: f.get_u64(&key("attention.head_count_kv")).unwrap_or(n_heads as u64) as usize,
            head_dim,
            rot_dim: f.get_u64(&key("rope.dimension_count")).unwrap_or(head_dim as u64) as usize,
            vocab_size,
            rope_theta: float("rope.freq_base", 10000.0),
            rope_style: RopeStyle::Interleaved,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            context_length: f.get_u64(&key("context_length")).unwrap_or(2048) as usize,
        };
        cfg.validate(&f.path)
    }

    pub fn from_hf(json: &serde_json::Value, dir: &Path) -> Result<Config> {
        let path = dir.join("config.json");
        let model_type = json["model_type"].as_str().unwrap_or("");
        if model_type != "llama" {
            let archs = json["architectures"].to_string();
            return Err(SiftError::UnsupportedArchitecture(format!("{model_type} {archs}").trim().to_string()));
        }
        let act = json["hidden_act"].as_str().unwrap_or("silu");
        if act != "silu" {
            return Err(SiftError::bad_file(&path, format!("hidden_act '{act}' is not supported (llama uses silu)")));
        }
        let int = |k: &str| -> Result<usize> {
            json[k]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| SiftError::bad_file(&path, format!("missing or non-integer '{k}'")))
        };
        let n_heads = int("num_attention_heads")?;
        let dim = int("hidden_size")?;
        let head_dim = json["head_dim"].as_u64().map(|v| v as usize).unwrap_or(dim / n_heads.max(1));
        let cfg = Config {
            architecture: Architecture::Llama,
            n_layers: int("num_hidden_layers")?,
            dim,
            ffn_dim: int("intermediate_size")?,
            n_heads,
            n_kv_heads: json["num_key_value_heads"].as_u64().map(|v| v as usize).unwrap_or(n_heads),
            head_dim,
            rot_dim: head_dim,
            vocab_size: int("vocab_size")?,
            rope_theta: json["rope_theta"].as_f64().unwrap_or(10000.0) as f32,
            rope_style: RopeStyle::Neox,
            rms_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-5) as f32,
            context_length: json["max_position_embeddings"].as_u64().unwrap_or(2048) as usize,
        };
        cfg.validate(&path)
    }

    /// Rejects shapes no real model has before anything is allocated from them.
    fn validate(self, path: &Path) -> Result<Config> {
        let bad = |m: String| Err(SiftError::bad_file(path, m));
        let c = &self;
        if c.n_layers == 0 || c.n_layers > 512 {
            return bad(format!("absurd layer count {}", c.n_layers));
        }
        // Weight rows are read 8 values at a time.
        if c.dim == 0 || c.dim > 65536 || !c.dim.is_multiple_of(8) {
            return bad(format!("hidden size {} must be a positive multiple of 8 up to 65536", c.dim));
        }
        if c.ffn_dim == 0 || c.ffn_dim > 1 << 18 || !c.ffn_dim.is_multiple_of(8) {
            return bad(format!("absurd feed-forward size {}", c.ffn_dim));
        }
        if c.n_heads == 0 || c.n_kv_heads == 0 || !c.n_heads.is_multiple_of(c.n_kv_heads) {
            return bad(format!("{} heads cannot share {} KV heads", c.n_heads, c.n_kv_heads));
        }
        if c.head_dim == 0 || c.head_dim > MAX_HEAD_DIM || !c.head_dim.is_multiple_of(8) || c.rot_dim > c.head_dim || !c.rot_dim.is_multiple_of(2) {
            return bad(format!("head dim {} / rotary dim {} unsupported (head dim up to {MAX_HEAD_DIM})", c.head_dim, c.rot_dim));
        }
        if c.vocab_size == 0 || c.vocab_size > 1 << 20 {
            return bad(format!("absurd vocabulary size {}", c.vocab_size));
        }
        if !(c.rope_theta.is_finite() && c.rope_theta > 0.0 && c.rms_eps.is_finite() && c.rms_eps >= 0.0) {
            return bad("rope theta / RMS epsilon not finite".into());
        }
        Ok(self)
    }
}
