//! A line chart as SVG (no plotting dependency): one panel per group, x the
//! activation ratio, y the score, one line per series, a shared legend.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    /// (x, y) sorted by x.
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

const COLORS: [&str; 8] = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#111111", "#46f0f0", "#f032e6"];

/// Panels side by side; `y_max` tops the y axis; x spans [0, 1].
pub fn svg(title: &str, y_label: &str, y_max: f64, panels: &[Panel]) -> String {
    let (pw, ph, left, top, bottom) = (420.0, 320.0, 60.0, 64.0, 60.0);
    let width = left + panels.len() as f64 * (pw + 30.0) + 150.0;
    let height = top + ph + bottom;
    let mut s = String::new();
    let _ = writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="22" font-size="16">{}</text>"#, esc(title));
    let mut names: Vec<&str> = Vec::new();
    for (p, panel) in panels.iter().enumerate() {
        let x0 = left + p as f64 * (pw + 30.0);
        let (x, y) = (|v: f64| x0 + v * pw, |v: f64| top + ph - (v / y_max).clamp(0.0, 1.0) * ph);
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"#, x0 + pw / 2.0, top - 10.0, esc(&panel.title));
        let _ = writeln!(s, r##"<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##);
        for i in 0..=5 {
            let v = y_max * i as f64 / 5.0;
            let (x1, yv, tx, ty) = (x0 + pw, y(v), x0 - 5.0, y(v) + 4.0);
            let _ = writeln!(s, r##"<line x1="{x0}" x2="{x1}" y1="{yv}" y2="{yv}" stroke="#eee"/><text x="{tx}" y="{ty}" text-anchor="end">{v:.0}</text>"##);
        }
        for i in 0..=10 {
            let v = i as f64 / 10.0;
            let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{v:.1}</text>"#, x(v), top + ph + 16.0);
        }
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">activation ratio</text>"#, x0 + pw / 2.0, top + ph + 36.0);
        for ser in &panel.series {
            if !names.contains(&ser.name.as_str()) {
                names.push(&ser.name);
            }
            let color = COLORS[names.iter().position(|n| *n == ser.name).unwrap() % COLORS.len()];
            let pts: Vec<String> = ser.points.iter().map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b))).collect();
            if pts.len() >= 2 {
                let _ = writeln!(s, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, pts.join(" "));
            }
            for &(a, b) in &ser.points {
                let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, x(a), y(b));
            }
        }
    }
    let _ = writeln!(s, r#"<text x="14" y="{}" transform="rotate(-90 14 {0})" text-anchor="middle">{}</text>"#, top + ph / 2.0, esc(y_label));
    let lx = left + panels.len() as f64 * (pw + 30.0);
    for (i, n) in names.iter().enumerate() {
        let ly = top + 10.0 + i as f64 * 20.0;
        let _ = writeln!(s, r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#, lx + 20.0, COLORS[i % COLORS.len()], lx + 26.0, ly + 4.0, esc(n));
    }
    s.push_str("</svg>\n");
    s
}

/// A scatter chart: one colour per series, y fitted to the points (and to
/// 1), x on a log scale (values > 0, e.g. perplexity ratios, ticked at round
/// values), dashed guides at `x_marks` and at y = `y_mark`.
pub fn scatter(title: &str, x_label: &str, y_label: &str, series: &[Series], x_marks: &[f64], y_mark: f64) -> String {
    let (pw, ph, left, top, bottom) = (560.0, 380.0, 70.0, 50.0, 60.0);
    let width = left + pw + 40.0 + 220.0;
    let height = top + ph + bottom;
    let finite = || series.iter().flat_map(|s| &s.points).filter(|p| p.0.is_finite() && p.0 > 0.0 && p.1.is_finite());
    let x_hi = finite().map(|p| p.0).chain(x_marks.iter().copied()).fold(1.0f64, f64::max).ln() + 0.05;
    let x_lo = finite().map(|p| p.0).fold(1.0f64, f64::min).ln() - 0.005;
    let y_hi = finite().map(|p| p.1).chain([y_mark]).fold(1.0f64, f64::max) * 1.1;
    let y_lo = finite().map(|p| p.1).fold(1.0f64, f64::min).min(0.5) * 0.9;
    let x = |v: f64| left + (v.ln() - x_lo) / (x_hi - x_lo) * pw;
    let y = |v: f64| top + ph - (v - y_lo) / (y_hi - y_lo) * ph;
    let x_ticks: Vec<f64> = [1.0f64, 1.01, 1.03, 1.1, 1.3, 2.0, 5.0, 10.0, 40.0, 100.0, 1000.0].into_iter().filter(|t: &f64| t.ln() >= x_lo && t.ln() <= x_hi).collect();
    let mut s = String::new();
    let _ = writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="24" font-size="16">{}</text>"#, esc(title));
    let _ = writeln!(s, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##);
    for i in 0..=5 {
        let yv = y_lo + (y_hi - y_lo) * i as f64 / 5.0;
        let (x1, yy, tx, ty) = (left + pw, y(yv), left - 5.0, y(yv) + 4.0);
        let _ = writeln!(s, r##"<line x1="{left}" x2="{x1}" y1="{yy}" y2="{yy}" stroke="#eee"/><text x="{tx}" y="{ty}" text-anchor="end">{yv:.2}</text>"##);
    }
    let mut last_tick = f64::NEG_INFINITY;
    for &t in &x_ticks {
        let (xt, y0, y1) = (x(t), top, top + ph);
        // Ticks too close to the last one drawn would overlap it.
        if xt - last_tick < 32.0 {
            continue;
        }
        last_tick = xt;
        let _ = writeln!(s, r##"<line x1="{xt}" x2="{xt}" y1="{y0}" y2="{y1}" stroke="#eee"/><text x="{xt}" y="{}" text-anchor="middle">{t}</text>"##, top + ph + 16.0);
    }
    for &m in x_marks {
        let _ = writeln!(s, r##"<line x1="{0}" x2="{0}" y1="{top}" y2="{1}" stroke="#999" stroke-dasharray="4 3"/>"##, x(m), top + ph);
    }
    let (x1, y_guide, y_one) = (left + pw, y(y_mark), y(1.0));
    let _ = writeln!(s, r##"<line x1="{left}" x2="{x1}" y1="{y_guide}" y2="{y_guide}" stroke="#999" stroke-dasharray="4 3"/>"##);
    let _ = writeln!(s, r##"<line x1="{left}" x2="{x1}" y1="{y_one}" y2="{y_one}" stroke="#444"/>"##);
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, left + pw / 2.0, top + ph + 36.0, esc(x_label));
    let _ = writeln!(s, r#"<text x="18" y="{}" transform="rotate(-90 18 {0})" text-anchor="middle">{}</text>"#, top + ph / 2.0, esc(y_label));
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for &(a, b) in ser.points.iter().filter(|p| p.0.is_finite() && p.0 > 0.0 && p.1.is_finite()) {
            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{color}" fill-opacity="0.8"/>"#, x(a), y(b));
        }
        let ly = top + 10.0 + i as f64 * 20.0;
        let lx = left + pw + 20.0;
        let _ = writeln!(s, r#"<circle cx="{}" cy="{ly}" r="5" fill="{color}"/><text x="{}" y="{}">{}</text>"#, lx + 6.0, lx + 18.0, ly + 4.0, esc(&ser.name));
    }
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The chart rasterised to PNG (resvg; text in the bundled Ubuntu font, so
/// no system fonts are needed), at twice the SVG's size.
pub fn png(svg: &str) -> anyhow::Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut fonts = usvg::fontdb::Database::new();
    fonts.load_font_data(epaint_default_fonts::UBUNTU_LIGHT.to_vec());
    let family = fonts.faces().next().and_then(|f| f.families.first()).map(|f| f.0.clone());
    if let Some(family) = family {
        fonts.set_sans_serif_family(family);
    }
    let options = usvg::Options { fontdb: std::sync::Arc::new(fonts), ..Default::default() };
    let tree = usvg::Tree::from_str(svg, &options)?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width() * 2, size.height() * 2).ok_or_else(|| anyhow::anyhow!("chart too large"))?;
    resvg::render(&tree, tiny_skia::Transform::from_scale(2.0, 2.0), &mut pixmap.as_mut());
    Ok(pixmap.encode_png()?)
}
