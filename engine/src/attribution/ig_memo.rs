//! Integrated Gradients results kept per attributed sequence. IG costs
//! 2 x steps x layers partial passes, the gradient metrics one pass, and IG
//! is a function of the tokens, the target and the step count alone: a sweep
//! that sets masks at several activation ratios from the same prompt pays
//! for IG once.

use std::collections::HashMap;

/// What IG scores depend on (besides the model, which an attributor fixes).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct IgKey {
    pub tokens: Vec<u32>,
    /// The resolved per-row targets and whether only the last row is scored.
    pub targets: Vec<u32>,
    pub last_position: bool,
    pub steps: usize,
}

/// IG slots of the neuron [layers, ffn] and head [layers, heads] scores.
pub(super) struct IgScores {
    pub neurons: Vec<f32>,
    pub heads: Vec<f32>,
}

/// Bounded (oracle runs attribute a new sequence every token): when full it
/// starts again empty rather than tracking use.
#[derive(Default)]
pub(super) struct IgMemo {
    entries: HashMap<IgKey, IgScores>,
}

/// About 190 KB per entry on the default model: some 50 MB at most.
const MAX_ENTRIES: usize = 256;

impl IgMemo {
    pub fn get(&self, key: &IgKey) -> Option<&IgScores> {
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: IgKey, scores: IgScores) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(key, scores);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: u32) -> IgKey {
        IgKey { tokens: vec![t], targets: vec![0], last_position: true, steps: 4 }
    }

    #[test]
    fn keeps_entries_up_to_the_bound_then_starts_again() {
        let mut m = IgMemo::default();
        for t in 0..MAX_ENTRIES as u32 {
            m.insert(key(t), IgScores { neurons: vec![t as f32], heads: vec![] });
        }
        assert_eq!(m.len(), MAX_ENTRIES);
        assert_eq!(m.get(&key(7)).unwrap().neurons, vec![7.0]);
        assert!(m.get(&IgKey { steps: 5, ..key(7) }).is_none());
        m.insert(key(9999), IgScores { neurons: vec![1.0], heads: vec![] });
        assert_eq!(m.len(), 1);
        assert!(m.get(&key(7)).is_none());
    }
}
