//! Mask and thresholds files (`sift-mask-1`, `sift-thresholds-1` JSON), read
//! from a scratch file as `--mask` and `--thresholds` read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sift_engine::model::sparse::{MaskFile, Thresholds};

fuzz_target!(|data: &[u8]| {
    let path = sift_fuzz::scratch_dir("sparse").join("file.json");
    std::fs::write(&path, data).expect("the scratch directory is writable");
    let _ = Thresholds::load(&path);
    let _ = MaskFile::load(&path);
});
