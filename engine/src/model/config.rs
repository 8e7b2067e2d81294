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

impl Architecture {
    /// The family's name as GGUF's `general.architecture` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
        }
    }
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
    /// RoPE scaling: rotary frequency i is divided by entry i (rot_dim / 2
    /// of them): linear scaling, Llama 3's, or GGUF's `rope_freqs` tensor.
    pub rope_freq_divisors: Option<Vec<f32>>,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    /// Longest context the model was trained for.
    pub context_length: usize,
}

impl Config {
    /// The (cos, sin) table of positions 0..max_pos, scaled as the model asks.
    pub fn rope_table(&self, max_pos: usize) -> Vec<[f32; 2]> {
        crate::kernels::rope::scaled_table(self.rope_theta, self.rot_dim, max_pos, self.rope_freq_divisors.as_deref())
    }

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
        let rot_dim = f.get_u64(&key("rope.dimension_count")).unwrap_or(head_dim as u64) as usize;
        let cfg = Config {
            architecture: Architecture::Llama,
            n_layers: f.get_u64(&key("block_count"))? as usize,
            dim,
            ffn_dim: f.get_u64(&key("feed_forward_length"))? as usize,
            n_heads,
            n_kv_heads: f.get_u64(&key("attention.head_count_kv")).unwrap_or(n_heads as u64) as usize,
            head_dim,
            rot_dim,
            vocab_size,
            rope_theta: float("rope.freq_base", 10000.0),
            rope_freq_divisors: gguf_rope_divisors(f, &arch, rot_dim)?,
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
        // What Sift does not compute is refused by name, never ignored.
        for key in ["attention_bias", "mlp_bias"] {
            if json[key].as_bool() == Some(true) {
                return Err(SiftError::bad_file(&path, format!("'{key}: true' (biases on the llama projections) is not supported")));
            }
        }
        let context_length = json["max_position_embeddings"].as_u64().unwrap_or(2048) as usize;
        if let Some(window) = json["sliding_window"].as_u64().filter(|&w| (w as usize) < context_length && json["use_sliding_window"].as_bool() != Some(false)) {
            return Err(SiftError::bad_file(&path, format!("sliding-window attention (window {window}) is not supported for llama")));
        }
        let rot_dim = match json["partial_rotary_factor"].as_f64() {
            None => head_dim,
            Some(f) if f > 0.0 && f <= 1.0 => ((head_dim as f64 * f).round() as usize) & !1,
            Some(f) => return Err(SiftError::bad_file(&path, format!("partial_rotary_factor {f} is not in (0, 1]"))),
        };
        // transformers 5 writes the RoPE settings under rope_parameters,
        // earlier versions rope_theta and rope_scaling at the top level.
        let rope = json.get("rope_parameters").filter(|v| v.is_object());
        let rope_theta = rope.and_then(|r| r["rope_theta"].as_f64()).or(json["rope_theta"].as_f64()).unwrap_or(10000.0);
        let scaling = rope.or(json.get("rope_scaling").filter(|v| v.is_object()));
        let rope_freq_divisors = match scaling {
            None => None,
            Some(s) => hf_rope_divisors(s, rope_theta, rot_dim).map_err(|m| SiftError::bad_file(&path, m))?,
        };
        let cfg = Config {
            architecture: Architecture::Llama,
            n_layers: int("num_hidden_layers")?,
            dim,
            ffn_dim: int("intermediate_size")?,
            n_heads,
            n_kv_heads: json["num_key_value_heads"].as_u64().map(|v| v as usize).unwrap_or(n_heads),
            head_dim,
            rot_dim,
            vocab_size: int("vocab_size")?,
            rope_theta: rope_theta as f32,
            rope_freq_divisors,
            rope_style: RopeStyle::Neox,
            rms_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-5) as f32,
            context_length,
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
        if let Some(d) = &c.rope_freq_divisors {
            if d.len() != c.rot_dim / 2 || d.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return bad(format!("RoPE scaling gives {} frequency factors; the rotary width {} needs {}, each positive", d.len(), c.rot_dim, c.rot_dim / 2));
            }
        }
        Ok(self)
    }
}

/// The frequency divisors of a Hugging Face RoPE scaling (`rope_scaling`, or
/// transformers 5's `rope_parameters`): none for default, the factor for
/// linear, Llama 3's smooth interpolation between 1 and the factor
/// (transformers' `_compute_llama3_parameters`); any other type refused.
fn hf_rope_divisors(s: &serde_json::Value, theta: f64, rot_dim: usize) -> std::result::Result<Option<Vec<f32>>, String> {
    let kind = s["rope_type"].as_str().or(s["type"].as_str()).unwrap_or("default");
    let num = |k: &str| s[k].as_f64().filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| format!("RoPE scaling '{kind}' needs a positive '{k}'"));
    let half = rot_dim / 2;
    let inv_freq = |i: usize| theta.powf(-(2.0 * i as f64) / rot_dim as f64);
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(vec![num("factor")? as f32; half])),
        "llama3" => {
            let (factor, low, high, old) = (num("factor")?, num("low_freq_factor")?, num("high_freq_factor")?, num("original_max_position_embeddings")?);
            if high <= low {
                return Err(format!("RoPE scaling 'llama3' needs high_freq_factor ({high}) above low_freq_factor ({low})"));
            }
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            let divisor = |i: usize| {
                let wavelen = 2.0 * std::f64::consts::PI / inv_freq(i);
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            };
            Ok(Some((0..half).map(|i| divisor(i) as f32).collect()))
        }
        other => Err(format!("RoPE scaling type '{other}' is not supported (supported: default, linear, llama3)")),
    }
}

/// The frequency divisors a GGUF file gives: its `rope_freqs` tensor (how
/// llama.cpp's converter stores Llama 3's scaling) or linear scaling from
/// `ARCH.rope.scaling.type`; any other scaling type refused.
fn gguf_rope_divisors(f: &GgufFile, arch: &str, rot_dim: usize) -> Result<Option<Vec<f32>>> {
    use crate::loader::TensorSource;
    if let Some(t) = f.tensor("rope_freqs.weight")? {
        return Ok(Some(t.data));
    }
    match f.get_str(&format!("{arch}.rope.scaling.type")) {
        None | Some("none") => Ok(None),
        Some("linear") => {
            let factor = f.get(&format!("{arch}.rope.scaling.factor")).and_then(|v| v.as_f64()).filter(|v| v.is_finite() && *v > 0.0);
            let factor = factor.ok_or_else(|| SiftError::bad_file(&f.path, "linear RoPE scaling needs a positive rope.scaling.factor"))?;
            Ok(Some(vec![factor as f32; rot_dim / 2]))
        }
        Some(other) => Err(SiftError::bad_file(&f.path, format!("RoPE scaling type '{other}' is not supported (supported: none, linear, llama3 as rope_freqs)"))),
    }
}
