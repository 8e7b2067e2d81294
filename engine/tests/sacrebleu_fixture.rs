//! Sift's sacreBLEU equals sacreBLEU's own scores
//! (`tests/fixtures/sacrebleu.json`, written by
//! `tests/fixtures/make_sacrebleu.py`): empty strings, punctuation, numbers,
//! HTML entities, unicode, very short and long answers, and random
//! near-copies.

use sift_engine::eval::bleu::sacrebleu;

#[test]
fn sacrebleu_equals_the_reference_implementation() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/sacrebleu.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut nonzero = 0;
    for case in cases {
        let (h, r, want) = (case[0].as_str().unwrap(), case[1].as_str().unwrap(), case[2].as_f64().unwrap());
        let got = sacrebleu(h, r);
        assert!((got - want).abs() <= 1e-6, "hypothesis {h:?}, reference {r:?}: {got} vs sacreBLEU {want}");
        nonzero += (want > 0.0) as usize;
    }
    assert!(nonzero >= 100, "only {nonzero} cases score above 0");
}
