//! GGUF bytes: header, metadata, tensor infos, the dequantization of every
//! tensor whatever its type, the model's config and weights (the tokenizer
//! has its own target, `gguf_tokenizer`: building one is slow).
//! Anything may be refused with an error; nothing may panic, hang or read
//! out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sift_engine::loader::{gguf::GgufFile, TensorSource};
use sift_engine::model::{Config, Weights};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else { return };
    for info in &file.tensors {
        let _ = file.tensor(&info.name);
    }
    if let Ok(config) = Config::from_gguf(&file) {
        let _ = Weights::load(&file, &config);
    }
});
