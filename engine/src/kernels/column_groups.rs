//! Where a compacted W_down's columns go when it keeps the model's 4 bits
//! (`matvec_rows_q4g.wgsl`). A Q4 row stores one d and m per block of 32
//! columns, and the active neurons of a mask are scattered over those blocks:
//! each block's active columns are packed into groups of 8 slots, padded, so
//! that every group takes one block's d and m and the copy is exact.
//!
//! The compacted gate|up lists its neurons densely, in the mask's order; its
//! rows are stored at their neurons' slots (`linear_store_slots.wgsl`), so
//! that the down projection reads each group's inputs where its weights are.

use super::packed::BLOCK;

/// Slots per group: one word of 4-bit quants.
pub const GROUP: usize = 8;
/// Marks a padding slot in [`ColumnGroups::slot_column`] (no column; q = 0).
pub const PADDING: u32 = u32::MAX;

/// One layer's plan.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnGroups {
    /// [slots]: the source column each slot holds, or [`PADDING`]; slots are
    /// a multiple of 32 (whole vec4s of groups).
    pub slot_column: Vec<u32>,
    /// [2 * width]: where the compacted gate|up stores each of its rows, in a
    /// buffer of [gate (slots) | up (slots) | 1]: gate row a of the list at
    /// its slot, up row a at slots + its slot, and padding rows (a past the
    /// list) at 2 * slots, which nothing reads.
    pub store_slot: Vec<u32>,
}

impl ColumnGroups {
    /// The plan for `active` (source columns in list order, each below
    /// `cols`, none twice) in a compacted gate|up of `width` rows per half.
    pub fn plan(active: &[u32], width: usize, cols: usize) -> ColumnGroups {
        assert!(active.len() <= width && cols.is_multiple_of(BLOCK));
        let mut by_block: Vec<Vec<usize>> = vec![Vec::new(); cols / BLOCK];
        for (a, &col) in active.iter().enumerate() {
            by_block[col as usize / BLOCK].push(a);
        }
        let mut slot_column = Vec::new();
        let mut slot_of = vec![0u32; active.len()];
        for mut members in by_block.into_iter().filter(|m| !m.is_empty()) {
            members.sort_by_key(|&a| active[a]);
            for a in members {
                slot_of[a] = slot_column.len() as u32;
                slot_column.push(active[a]);
            }
            slot_column.resize(slot_column.len().next_multiple_of(GROUP), PADDING);
        }
        let slots = slot_column.len().next_multiple_of(4 * GROUP).max(4 * GROUP);
        slot_column.resize(slots, PADDING);
        let unused = 2 * slots as u32;
        let half = |offset: u32| (0..width).map(|a| slot_of.get(a).map_or(unused, |&s| offset + s)).collect::<Vec<_>>();
        let store_slot = [half(0), half(slots as u32)].concat();
        ColumnGroups { slot_column, store_slot }
    }

    /// Slots in all.
    pub fn slots(&self) -> usize {
        self.slot_column.len()
    }

    /// Whether the grouped 4-bit copy is the faster one to read: a row costs
    /// 2 vec4 loads per 32 slots against 1 per 8 f16 columns, and on lavapipe
    /// a grouped load costs about 0.8 of an f16 one (fewer conversions), so
    /// groups pay up to 2.5 slots a column. The default model's masks take
    /// 1.4-1.5 at AR 0.2-0.5 (a decode step 7% faster), 2.4 at AR 0.1 (about
    /// even); masks spread thinner pad most slots and stay f16.
    pub fn beats_f16(&self, width: usize) -> bool {
        self.slots() * 8 <= width * 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns of one block share groups, in column order, and blocks start
    /// new groups; every listed row has its own slot, and padding rows go to
    /// the unused slot.
    #[test]
    fn blocks_are_packed_into_groups_of_8() {
        // Block 0: 3 columns; block 2: 9 columns (two groups); block 1: none.
        let active: Vec<u32> = vec![70, 5, 64, 65, 66, 67, 68, 69, 71, 72, 0, 31];
        let g = ColumnGroups::plan(&active, 16, 96);
        assert_eq!(g.slots(), 32);
        let p = PADDING;
        assert_eq!(g.slot_column[..24], [0, 5, 31, p, p, p, p, p, 64, 65, 66, 67, 68, 69, 70, 71, 72, p, p, p, p, p, p, p]);
        assert!(g.slot_column[24..].iter().all(|&c| c == PADDING));
        for (a, &col) in active.iter().enumerate() {
            let s = g.store_slot[a] as usize;
            assert_eq!(g.slot_column[s], col, "gate row {a}");
            assert_eq!(g.store_slot[16 + a] as usize, 32 + s, "up row {a}");
        }
        assert!(g.store_slot[12..16].iter().chain(&g.store_slot[28..]).all(|&s| s == 64), "padding rows");
        let whole_block: Vec<u32> = (32..64).collect();
        assert!(ColumnGroups::plan(&whole_block, 32, 96).beats_f16(32));
        assert!(!ColumnGroups::plan(&[0, 32, 64], 8, 96).beats_f16(8), "three groups of one column");
    }

    /// Every group holds columns of a single block, whatever the list.
    #[test]
    fn no_group_spans_two_blocks() {
        use rand::{seq::SliceRandom, Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12345);
        for _ in 0..20 {
            let mut active: Vec<u32> = (0..256).filter(|_| rng.random_bool(0.2)).collect();
            active.shuffle(&mut rng);
            let g = ColumnGroups::plan(&active, active.len().next_multiple_of(8), 256);
            for group in g.slot_column.chunks(GROUP) {
                let blocks: Vec<u32> = group.iter().filter(|&&c| c != PADDING).map(|&c| c / 32).collect();
                assert!(blocks.windows(2).all(|w| w[0] == w[1]), "{group:?}");
            }
            let mut held: Vec<u32> = g.slot_column.iter().copied().filter(|&c| c != PADDING).collect();
            held.sort_unstable();
            let mut want = active.clone();
            want.sort_unstable();
            assert_eq!(held, want);
        }
    }
}
