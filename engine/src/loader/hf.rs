//! Hugging Face model directories: `config.json`, one or more `*.safetensors`
//! (F32/F16/BF16) and `tokenizer.json`. Tensor names are mapped to GGUF names so
//! the model code sees one naming scheme.

use super::{Tensor, TensorSource};
use crate::error::{Result, SiftError};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct HfDir {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    files: Vec<(PathBuf, memmap2::Mmap)>,
    /// HF tensor name -> index into `files`.
    index: HashMap<String, usize>,
}

/// GGUF name -> Hugging Face name for the Llama family.
pub fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// A model directory's `config.json`, parsed (no tensor is read).
pub fn read_config_json(dir: &Path) -> Result<serde_json::Value> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| SiftError::io(&config_path, e))?;
    serde_json::from_str(&text).map_err(|e| SiftError::bad_file(&config_path, format!("not valid JSON: {e}")))
}

impl HfDir {
    pub fn open(dir: &Path) -> Result<HfDir> {
        let config = read_config_json(dir)?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| SiftError::io_doing("listing", dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(SiftError::bad_file(dir, "no *.safetensors files in the model directory"));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in paths {
            let file = std::fs::File::open(&path).map_err(|e| SiftError::io(&path, e))?;
            // SAFETY: read-only map of a file we do not modify.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| SiftError::io(&path, e))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| SiftError::bad_file(&path, format!("bad safetensors: {e}")))?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, map));
        }
        Ok(HfDir {
            dir: dir.to_path_buf(),
            config,
            files,
            index,
        })
    }
}

impl TensorSource for HfDir {
    fn stored_names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn stored_name(&self, name: &str) -> Option<String> {
        hf_name(name)
    }

    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(hf) = hf_name(name) else { return Ok(None) };
        let Some(&fi) = self.index.get(&hf) else { return Ok(None) };
        let (path, map) = &self.files[fi];
        let st = SafeTensors::deserialize(map).map_err(|e| SiftError::bad_file(path, format!("bad safetensors: {e}")))?;
        let view = st.tensor(&hf).map_err(|e| SiftError::bad_file(path, format!("tensor {hf}: {e}")))?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(SiftError::UnsupportedTensorType {
                    ty: format!("{other:?}"),
                    tensor: hf,
                })
            }
        };
        Ok(Some(Tensor {
            shape: view.shape().to_vec(),
            data,
        }))
    }
}
