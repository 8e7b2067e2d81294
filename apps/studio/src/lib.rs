//! Sift Studio: an egui window that generates text while drawing each layer's
//! activation masks live, and a headless `--bench`. The engine runs on a
//! worker thread (`worker`); `app` draws, `masks` is the mask view.

pub mod app;
pub mod compare;
pub mod bench;
pub mod masks;
pub mod worker;
