//! The TruthfulQA CSV as `sift eval truthfulqa-*` reads it, and the prompts
//! made from what it yields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sift_engine::eval::truthfulqa;

fuzz_target!(|data: &[u8]| {
    let path = sift_fuzz::scratch_dir("truthfulqa").join("truthfulqa.csv");
    std::fs::write(&path, data).expect("the scratch directory is writable");
    if let Ok(questions) = truthfulqa::load(&path) {
        for q in &questions {
            let _ = (truthfulqa::gen_prompt(q), truthfulqa::mc_prompt(q));
        }
    }
});
