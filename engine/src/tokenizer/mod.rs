//! Tokenizer through the `tokenizers` crate: from `tokenizer.json`, or rebuilt
//! from GGUF metadata (`tokenizer.ggml.tokens` / `merges` / `pre`, or
//! `scores` for SentencePiece) as the equivalent `tokenizer.json`, so both
//! paths run the same, well-tested code.

mod sentencepiece;

use crate::error::{Result, SiftError};
use crate::loader::gguf::{GgufFile, Value};
use serde_json::json;
use std::path::Path;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Token ids that end generation (end of text, end of turn).
    pub stop_ids: Vec<u32>,
    pub bos_id: Option<u32>,
    /// Whether the model expects BOS in front of a prompt.
    pub add_bos: bool,
    /// True when the vocabulary has ChatML markers (`<|im_start|>`).
    pub chatml: bool,
}

fn tok_err(e: impl std::fmt::Display) -> SiftError {
    SiftError::Tokenizer(e.to_string())
}

/// A tokenizers-crate tokenizer from its JSON, with a panic inside that
/// crate turned into an error.
fn parse_spec(json: &str) -> std::result::Result<tokenizers::Tokenizer, String> {
    match std::panic::catch_unwind(|| json.parse::<tokenizers::Tokenizer>()) {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(_) => Err("the tokenizers library could not read it".into()),
    }
}

impl Tokenizer {
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| SiftError::io(&path, e))?;
        // The tokenizers crate panics (an `expect`) on some malformed JSON
        // inside a component (found by fuzz/hf_dir): the syntax is checked
        // here first, and any panic left becomes an error naming the file.
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| SiftError::bad_file(&path, format!("tokenizer: not valid JSON: {e}")))?;
        let inner = parse_spec(&text).map_err(|e| SiftError::bad_file(&path, format!("tokenizer: {e}")))?;
        let read_json = |name: &str| -> serde_json::Value {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        let (config, gen) = (read_json("config.json"), read_json("generation_config.json"));
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            match v {
                serde_json::Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
                _ => vec![],
            }
        };
        let mut stop_ids = ids(&gen["eos_token_id"]);
        stop_ids.extend(ids(&config["eos_token_id"]));
        let bos_id = ids(&config["bos_token_id"]).first().copied();
        Ok(Self::finish(inner, stop_ids, bos_id, false))
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let bad = |m: &str| SiftError::bad_file(&f.path, format!("tokenizer metadata: {m}"));
        let model = f.get_str("tokenizer.ggml.model").ok_or_else(|| bad("missing tokenizer.ggml.model"))?;
        if model != "gpt2" && model != "llama" {
            return Err(SiftError::Tokenizer(format!(
                "GGUF tokenizer model '{model}' is not supported (supported: gpt2 byte-level BPE, llama SentencePiece); \
                 use a Hugging Face directory with tokenizer.json instead"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            match f.get(key) {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(&format!("{key} holds a non-string"))))
                    .collect(),
                _ => Err(bad(&format!("missing {key}"))),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match f.get("tokenizer.ggml.token_type") {
            Some(Value::Array(items)) => items.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let vocab: serde_json::Map<String, serde_json::Value> =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
        if vocab.len() != tokens.len() {
            return Err(bad("tokenizer.ggml.tokens holds the same token twice"));
        }
        // Control (3) and user-defined (4) tokens are matched whole, before
        // the model, as llama.cpp matches them.
        let added: Vec<serde_json::Value> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
            .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                                 "rstrip": false, "normalized": false, "special": types[i] == 3}))
            .collect();
        let [normalizer, pre, decoder, model] = if model == "llama" {
            let scores: Vec<f32> = match f.get("tokenizer.ggml.scores") {
                Some(Value::Array(items)) if items.len() == tokens.len() => items
                    .iter()
                    .map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| bad("tokenizer.ggml.scores holds a non-number")))
                    .collect::<Result<_>>()?,
                _ => return Err(bad("a SentencePiece vocabulary needs tokenizer.ggml.scores, one per token")),
            };
            let add_space_prefix = f.get("tokenizer.ggml.add_space_prefix").and_then(Value::as_bool).unwrap_or(true);
            let merges = sentencepiece::merges_from_scores(&tokens, &scores);
            let [normalizer, decoder, model] = sentencepiece::spec(vocab, merges, add_space_prefix);
            [normalizer, serde_json::Value::Null, decoder, model]
        } else {
            let merges = strings("tokenizer.ggml.merges")?;
            let pre = byte_level_pre_tokenizer(f.get_str("tokenizer.ggml.pre").unwrap_or("default"))?;
            let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            let model = json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                               "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                               "ignore_merges": false, "vocab": vocab, "merges": merges});
            [serde_json::Value::Null, pre, decoder, model]
        };
        let spec = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added, "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": null,
            "decoder": decoder, "model": model,
        });
        let inner = parse_spec(&spec.to_string()).map_err(|e| bad(&e))?;
        let id = |key: &str| f.get(key).and_then(Value::as_u64).map(|v| v as u32);
        let stop_ids = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"].iter().filter_map(|k| id(k)).collect();
        let add_bos = f.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        Ok(Self::finish(inner, stop_ids, id("tokenizer.ggml.bos_token_id"), add_bos))
    }

    fn finish(inner: tokenizers::Tokenizer, mut stop_ids: Vec<u32>, bos_id: Option<u32>, add_bos: bool) -> Tokenizer {
        let chatml = inner.token_to_id("<|im_start|>").is_some();
        if let Some(end) = inner.token_to_id("<|im_end|>") {
            stop_ids.push(end);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Tokenizer { inner, stop_ids, bos_id, add_bos, chatml }
    }

    /// Token ids of `text`; special-token strings in the text are matched.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if self.add_bos {
            if let Some(b) = self.bos_id {
                ids.insert(0, b);
            }
        }
        Ok(ids)
    }

    /// The BOS id when the model requires BOS in front of its input (the
    /// evaluation protocols then start every window with it).
    pub fn required_bos(&self) -> Option<u32> {
        if self.add_bos {
            self.bos_id
        } else {
            None
        }
    }

    /// Token ids of `text` alone: no BOS, whatever the model's default.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Wraps a user message in the model's chat format.
    pub fn chat_prompt(&self, user: &str) -> Result<String> {
        if !self.chatml {
            return Err(SiftError::InvalidInput(
                "--chat needs a model with a ChatML vocabulary (<|im_start|>); this one has none".into(),
            ));
        }
        Ok(format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"))
    }
}

/// The pre-tokenizer of a byte-level BPE vocabulary named by GGUF's
/// `tokenizer.ggml.pre`, as llama.cpp splits text before BPE.
fn byte_level_pre_tokenizer(name: &str) -> Result<serde_json::Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    Ok(match name {
        // SmolLM splits every digit on its own before the GPT-2 regex.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "gpt2" | "gpt-2" | "default" => byte_level(true),
        // Llama 3's regex: contractions, letters, numbers of up to 3 digits,
        // punctuation, newlines, spaces.
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
        // Qwen2's is Llama 3's with single digits.
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
        other => {
            return Err(SiftError::Tokenizer(format!(
                "GGUF pre-tokenizer '{other}' is not supported (supported: smollm, gpt2, gpt-2, default, llama-bpe, qwen2)"
            )))
        }
    })
}

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Turns a growing list of token ids into text pieces, holding back bytes of
/// an incomplete UTF-8 character until the token that completes it arrives.
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    printed: usize,
}

impl StreamDecoder {
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.printed || !text.is_char_boundary(self.printed) {
            return Ok(String::new());
        }
        let piece = text[self.printed..].to_string();
        self.printed = text.len();
        Ok(piece)
    }
}
