//! BLEU (Papineni et al. 2002) of one candidate against one reference:
//! clipped n-gram precisions for n = 1..4, geometric mean with uniform
//! weights, brevity penalty. Two forms:
//! - [`sacrebleu`]: sacreBLEU's, as the sparse-activation paper scores each
//!   answer (`corpus_bleu([hyp], [[ref]])`: tokenizer 13a, exp smoothing;
//!   an empty or very short hypothesis scores 0). Checked against sacreBLEU
//!   itself on a committed fixture.
//! - [`sentence_bleu`]: Sift's earlier form, on whitespace words with add-one
//!   smoothing of the orders above 1 (Lin & Och 2004), empty against empty
//!   scoring 1: kept beside sacreBLEU so older tables can be compared.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Python's `str.split()` whitespace: Unicode's, plus the separators
/// U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// sacreBLEU's 13a tokenizer (mteval-v13a, as WMT uses it): the text with
/// its punctuation split off, as tokens.
pub fn tokenize_13a(text: &str) -> Vec<String> {
    static RULES: OnceLock<[(regex::Regex, &str); 4]> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        let re = |p: &str| regex::Regex::new(p).expect("a valid pattern");
        [
            // Symbols: { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + : ; < = > ? @ /
            (re(r"([\x7B-\x7E\x5B-\x60\x20-\x26\x28-\x2B\x3A-\x40/])"), " ${1} "),
            // Period and comma, unless preceded by a digit...
            (re(r"([^0-9])([\.,])"), "${1} ${2} "),
            // ...or unless followed by one.
            (re(r"([\.,])([^0-9])"), " ${1} ${2}"),
            // A dash after a digit.
            (re(r"([0-9])(-)"), "${1} ${2} "),
        ]
    });
    let mut line = text.trim_end_matches(is_python_space).replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (re, replacement) in rules {
        line = re.replace_all(&line, *replacement).into_owned();
    }
    line.split(is_python_space).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// sacreBLEU's BLEU (0-100) of one hypothesis against one reference:
/// `sacrebleu.corpus_bleu([hypothesis], [[reference]]).score` with its
/// defaults (tokenizer 13a, exp smoothing: the k-th order with no match
/// counts 1 / (2^k total)).
pub fn sacrebleu(hypothesis: &str, reference: &str) -> f64 {
    let (h, r) = (tokenize_13a(hypothesis), tokenize_13a(reference));
    let (h, r): (Vec<&str>, Vec<&str>) = (h.iter().map(String::as_str).collect(), r.iter().map(String::as_str).collect());
    let (mut correct, mut total) = ([0usize; 4], [0usize; 4]);
    for n in 1..=4 {
        let (hn, rn) = (ngrams(&h, n), ngrams(&r, n));
        total[n - 1] = hn.values().sum();
        correct[n - 1] = hn.iter().map(|(g, &k)| k.min(rn.get(g).copied().unwrap_or(0))).sum();
    }
    let (sys_len, ref_len) = (h.len() as f64, r.len() as f64);
    let brevity = if sys_len < ref_len { if sys_len > 0.0 { (1.0 - ref_len / sys_len).exp() } else { 0.0 } } else { 1.0 };
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; 4];
    let mut smooth = 1.0;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    // sacreBLEU's floored log: an order the hypothesis is too short for
    // (precision 0) makes the score 0.
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    brevity * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp()
}

/// Whitespace-separated words: BLEU's tokens.
pub fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

fn ngrams<'a>(w: &[&'a str], n: usize) -> HashMap<Vec<&'a str>, usize> {
    let mut m = HashMap::new();
    for g in w.windows(n) {
        *m.entry(g.to_vec()).or_insert(0) += 1;
    }
    m
}

/// BLEU in [0, 1]; 1 for identical non-empty texts (and for two empty ones).
pub fn sentence_bleu(candidate: &[&str], reference: &[&str]) -> f64 {
    if candidate.is_empty() || reference.is_empty() {
        return if candidate.is_empty() && reference.is_empty() { 1.0 } else { 0.0 };
    }
    let mut log_sum = 0.0;
    for n in 1..=4 {
        let (c, r) = (ngrams(candidate, n), ngrams(reference, n));
        let total: usize = c.values().sum();
        let matched: usize = c.iter().map(|(g, &k)| k.min(r.get(g).copied().unwrap_or(0))).sum();
        let p = if n == 1 {
            if matched == 0 {
                return 0.0;
            }
            matched as f64 / total as f64
        } else {
            (matched as f64 + 1.0) / (total as f64 + 1.0)
        };
        log_sum += p.ln() / 4.0;
    }
    let (c, r) = (candidate.len() as f64, reference.len() as f64);
    let brevity = if c >= r { 1.0 } else { (1.0 - r / c).exp() };
    brevity * log_sum.exp()
}

/// Fraction of the reference's token positions where the candidate has the same token.
pub fn token_agreement(candidate: &[u32], reference: &[u32]) -> f64 {
    if reference.is_empty() {
        return if candidate.is_empty() { 1.0 } else { 0.0 };
    }
    reference.iter().zip(candidate).filter(|(a, b)| a == b).count() as f64 / reference.len() as f64
}

/// The first position where the candidate leaves the reference: the length
/// of their common prefix (the reference's length when it is a prefix of the
/// candidate, the candidate's when that ends first).
pub fn first_divergence(candidate: &[u32], reference: &[u32]) -> usize {
    candidate.iter().zip(reference).position(|(a, b)| a != b).unwrap_or(candidate.len().min(reference.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_texts_score_one_and_disjoint_zero() {
        let a = words("the cat sat on the mat");
        assert!((sentence_bleu(&a, &a) - 1.0).abs() < 1e-12);
        assert_eq!(sentence_bleu(&words("dogs run fast"), &a), 0.0);
        assert_eq!(sentence_bleu(&[], &a), 0.0);
        assert_eq!(sentence_bleu(&[], &[]), 1.0);
    }

    #[test]
    fn by_hand() {
        // Candidate "the cat sat" vs "the cat sat on the mat": precisions
        // 1, (2+1)/(2+1), (1+1)/(1+1), and 4-grams (0+1)/(0+1); brevity e^(1-2).
        let got = sentence_bleu(&words("the cat sat"), &words("the cat sat on the mat"));
        assert!((got - (-1.0f64).exp()).abs() < 1e-12, "{got}");
        // Clipping: "the the the" has one matching "the"... of 3 unigrams, reference has 2.
        let got = sentence_bleu(&words("the the the"), &words("the cat the"));
        let want = ((2.0f64 / 3.0).ln() / 4.0 + (1.0f64 / 3.0).ln() / 4.0 + (1.0f64 / 2.0).ln() / 4.0 + 0.0).exp();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn agreement_counts_positions() {
        assert_eq!(token_agreement(&[1, 2, 3, 4], &[1, 9, 3, 4]), 0.75);
        assert_eq!(token_agreement(&[1, 2], &[1, 2, 3, 4]), 0.5);
        assert_eq!(token_agreement(&[], &[]), 1.0);
    }

    #[test]
    fn first_divergence_is_the_common_prefix() {
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(first_divergence(&[9, 2], &[1, 2]), 0);
        assert_eq!(first_divergence(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 2]), 2);
        assert_eq!(first_divergence(&[], &[]), 0);
    }
}
