//! The transformer: its hyper-parameters (`config`), its weights as f32
//! (`weights`), the plain-Rust reference forward (`cpu`) and the WGSL forward
//! (`gpu`). `load` opens a GGUF file or a Hugging Face directory.

pub mod config;
pub mod cpu;
pub mod gpu;
pub mod site;
pub mod sparse;
pub mod weights;

pub use config::{Architecture, Config};
pub use cpu::CpuModel;
pub use gpu::{GpuModel, Logits, ModelOptions, UnitBytes};
pub use site::Site;
pub use weights::{LayerWeights, Weights};

use crate::error::{Result, SiftError};
use crate::loader::{gguf::GgufFile, hf::HfDir, Recording};
use crate::tokenizer::Tokenizer;
use std::path::Path;

/// Everything read from a model file, on the CPU.
pub struct LoadedModel {
    pub config: Config,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
}

/// The model's shape from its metadata alone (a GGUF header, or
/// config.json): no tensor is read, so arguments can be checked against it
/// before the slow load and upload.
pub fn read_config(path: &Path) -> Result<Config> {
    if path.is_dir() {
        Config::from_hf(&crate::loader::hf::read_config_json(path)?, path)
    } else if path.exists() {
        Config::from_gguf(&GgufFile::open(path)?)
    } else {
        Err(not_found(path))
    }
}

fn not_found(path: &Path) -> SiftError {
    SiftError::io_doing("opening the model", path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"))
}

/// Opens a `.gguf` file or a Hugging Face directory.
pub fn load(path: &Path) -> Result<LoadedModel> {
    if path.is_dir() {
        let dir = HfDir::open(path)?;
        let config = Config::from_hf(&dir.config, path)?;
        let source = Recording::new(&dir);
        let weights = Weights::load(&source, &config)?;
        source.check_all_used(&[], path)?;
        if weights.lm_head.is_none() && dir.config["tie_word_embeddings"].as_bool() == Some(false) {
            return Err(SiftError::bad_file(path, "config.json says tie_word_embeddings: false, but there is no lm_head.weight"));
        }
        let tokenizer = Tokenizer::from_hf_dir(path)?;
        Ok(LoadedModel { config, weights, tokenizer })
    } else if path.exists() {
        let file = GgufFile::open(path)?;
        let config = Config::from_gguf(&file)?;
        let source = Recording::new(&file);
        let weights = Weights::load(&source, &config)?;
        // Config::from_gguf reads rope_freqs (Llama 3's RoPE scaling).
        source.check_all_used(&["rope_freqs.weight"], path)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        Ok(LoadedModel { config, weights, tokenizer })
    } else {
        Err(not_found(path))
    }
}
