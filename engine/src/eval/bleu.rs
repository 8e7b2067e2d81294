//! Sentence BLEU (Papineni et al. 2002) of one candidate against one
//! reference: clipped n-gram precisions for n = 1..4, geometric mean with
//! uniform weights, brevity penalty; n-gram orders with no match are smoothed
//! by adding one to numerator and denominator (Lin & Och 2004), as sentence
//! BLEU usually is, so a short near-miss is not scored 0.

use std::collections::HashMap;

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
