//! Sift engine: a WebGPU (wgpu + WGSL) inference engine for small language models.
//!
//! Layout: `gpu` is the runtime (adapter, device, buffers, pipelines), `kernels` one
//! launcher per WGSL file in `shaders/`, `loader` reads GGUF and Hugging Face
//! directories into f32 tensors, `model` holds the architecture (config, the CPU
//! reference forward and the GPU forward), and the rest is generation glue.

pub mod attribution;
pub mod bench;
pub mod calibrate;
pub mod eval;
pub mod default_model;
pub mod error;
pub mod generate;
pub mod gpu;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod output;
pub mod perplexity;
pub mod roofline;
pub mod input_calibration;
pub mod rule_calibration;
pub mod sampling;
pub mod testing;
pub mod tokenizer;

pub use error::{Result, SiftError};
/// The wgpu the engine is built on (apps share its types).
pub use wgpu;
