//! The tokenizer built from GGUF metadata (byte-level BPE or SentencePiece):
//! the metadata comes from the input's GGUF bytes, and the text to encode
//! from the bytes after the file (GGUF ignores trailing bytes past its data).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sift_engine::loader::gguf::GgufFile;
use sift_engine::tokenizer::{StreamDecoder, Tokenizer};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else { return };
    let Ok(t) = Tokenizer::from_gguf(&file) else { return };
    let _ = t.required_bos();
    let _ = t.chat_prompt("hello");
    // The input's last 64 bytes, as text, exercise encoding and decoding.
    let tail = String::from_utf8_lossy(&data[data.len().saturating_sub(64)..]);
    if let Ok(ids) = t.encode(&tail) {
        let _ = t.decode(&ids);
        let mut stream = StreamDecoder::default();
        for &id in &ids {
            let _ = stream.push(&t, id);
        }
    }
    // Ids the vocabulary does not have are refused, not read.
    let _ = t.decode(&[u32::MAX, 0, 300_000]);
});
