//! Backward kernels of the attribution pass: each carries a gradient from a
//! layer's output to its input (no weight gradients). The transposed linear
//! layers need no kernel of their own: they are the forward linear kernels run
//! on transposed copies of the weights (see `attribution::transposed`).
//!
//! Each launcher has a plain Rust reference, tested against the GPU kernel on
//! random inputs and against central finite differences of the forward reference.

pub mod attention;
pub mod log_softmax;
pub mod rmsnorm;
pub mod swiglu;

#[cfg(test)]
pub(crate) mod finite_diff {
    /// Checks `grad` = d(sum(r * f(x)))/dx at every coordinate of `x` by central
    /// differences in f64 over the f32 forward. Returns the worst
    /// |analytic - numeric| relative to max |grad|.
    pub fn check(f: impl Fn(&[f32]) -> Vec<f32>, x: &[f32], r: &[f32], grad: &[f32], eps: f32) -> f64 {
        let loss = |x: &[f32]| -> f64 { f(x).iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum() };
        let scale = grad.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
        let mut worst = 0.0f64;
        let mut xp = x.to_vec();
        for i in 0..x.len() {
            xp[i] = x[i] + eps;
            let up = loss(&xp);
            xp[i] = x[i] - eps;
            let down = loss(&xp);
            xp[i] = x[i];
            let numeric = (up - down) / (2.0 * eps as f64);
            worst = worst.max((numeric - grad[i] as f64).abs() / scale);
        }
        worst
    }
}
