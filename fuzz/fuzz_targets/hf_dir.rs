//! A Hugging Face model directory: config.json, tokenizer.json and
//! model.safetensors, cut from the input (see `sift_fuzz::split3`), written
//! to a scratch directory and loaded as `sift` loads a model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [config, tokenizer, safetensors] = sift_fuzz::split3(data);
    let dir = sift_fuzz::scratch_dir("hf");
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("the scratch directory is writable");
    write("config.json", config);
    write("tokenizer.json", tokenizer);
    write("model.safetensors", safetensors);
    if let Ok(model) = sift_engine::model::load(&dir) {
        if let Ok(ids) = model.tokenizer.encode("Hi there, 12 émigrés\n") {
            let _ = model.tokenizer.decode(&ids);
        }
    }
});
