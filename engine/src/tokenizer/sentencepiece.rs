//! SentencePiece vocabularies (GGUF `tokenizer.ggml.model = llama`: Gemma,
//! Llama 2, TinyLlama, Mistral) as the `tokenizers` crate's BPE.
//!
//! llama.cpp's SentencePiece tokenizer starts from single characters and
//! repeatedly merges the adjacent pair whose concatenation is in the
//! vocabulary with the highest score; characters left outside the vocabulary
//! become byte tokens (`<0x41>`). A BPE whose merges are every split of every
//! token into two tokens, ranked by the joined token's score, does the same
//! (Hugging Face converts SentencePiece models this way); spaces are `▁`.

use serde_json::{json, Value};
use std::collections::HashMap;

/// Merges (left, right) for every token that splits into two tokens, the
/// highest-scoring joined token first (ties: lower id first).
pub fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut ranked: Vec<(f32, usize, usize)> = vec![];
    for (id, token) in tokens.iter().enumerate() {
        for (split, _) in token.char_indices().skip(1) {
            if ids.contains_key(&token[..split]) && ids.contains_key(&token[split..]) {
                ranked.push((scores[id], id, split));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, id, split)| {
            (
                tokens[id][..split].to_string(),
                tokens[id][split..].to_string(),
            )
        })
        .collect()
}

/// The `tokenizer.json` pieces of a SentencePiece vocabulary: normalizer,
/// decoder and model. `add_space_prefix`: a `▁` goes in front of the text
/// (and after each special token), and decoding strips it.
pub fn spec(
    vocab: serde_json::Map<String, Value>,
    merges: Vec<(String, String)>,
    add_space_prefix: bool,
) -> [Value; 3] {
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if add_space_prefix {
        json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace]})
    } else {
        replace
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let model = json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                       "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": true,
                       "ignore_merges": false, "vocab": vocab, "merges": merges});
    [
        normalizer,
        json!({"type": "Sequence", "decoders": decoders}),
        model,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_rank_by_the_joined_tokens_score() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -0.5];
        let m = merges_from_scores(&tokens, &scores);
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        // "abc" splits two ways (both joined at its score), then "bc", then "ab".
        assert_eq!(
            m,
            vec![
                pair("a", "bc"),
                pair("ab", "c"),
                pair("b", "c"),
                pair("a", "b")
            ]
        );
    }
}
