//! The inputs of a block's projections, where an input rule (TEAL's,
//! `sparse::inputs`) may zero elements: the reference forward (`cpu`) and
//! the GPU forward name them the same way.

use super::Config;

/// The input of one of a block's projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    Attn,
    O,
    Mlp,
    Down,
}

impl Site {
    pub const ALL: [Site; 4] = [Site::Attn, Site::O, Site::Mlp, Site::Down];

    pub fn name(self) -> &'static str {
        match self {
            Site::Attn => "attn",
            Site::O => "o",
            Site::Mlp => "mlp",
            Site::Down => "down",
        }
    }

    /// Width of the site's input per token.
    pub fn width(self, c: &Config) -> usize {
        match self {
            Site::Attn | Site::Mlp => c.dim,
            Site::O => c.q_dim(),
            Site::Down => c.ffn_dim,
        }
    }

    /// Rows of the projection the input feeds: the weights one input element's column holds.
    pub fn rows(self, c: &Config) -> usize {
        match self {
            Site::Attn => c.q_dim() + 2 * c.kv_dim(),
            Site::O | Site::Down => c.dim,
            Site::Mlp => 2 * c.ffn_dim,
        }
    }
}
