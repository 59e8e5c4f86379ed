//! A tiny SVG writer for grouped bar charts: enough for BENCHMARKS.md, no dependencies.

use std::fmt::Write;

/// One group of bars (one x position), one bar per series.
#[derive(Debug, Clone)]
pub struct Group {
    /// Label under the group.
    pub label: String,
    /// One value per series (None: no bar).
    pub values: Vec<Option<f64>>,
}

const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A grouped bar chart with a title, a y-axis label, series names and groups.
pub fn bar_chart(title: &str, y_label: &str, series: &[String], groups: &[Group]) -> String {
    let (w, h) = (900.0_f64, 420.0_f64);
    let (left, right, top, bottom) = (80.0, 170.0, 40.0, 70.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten())
        .fold(0.0_f64, |m, v| m.max(*v));
    let max = if max <= 0.0 { 1.0 } else { max * 1.1 };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    let _ = write!(
        s,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        escape(y_label)
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/>"##,
            left + plot_w
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            short(v)
        );
    }
    let n = groups.len().max(1) as f64;
    let group_w = plot_w / n;
    let bars = series.len().max(1) as f64;
    let bar_w = group_w * 0.8 / bars;
    for (gi, g) in groups.iter().enumerate() {
        let gx = left + group_w * gi as f64 + group_w * 0.1;
        for (si, v) in g.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let bh = plot_h * (v / max);
            let x = gx + bar_w * si as f64;
            let color = COLORS.get(si % COLORS.len()).copied().unwrap_or("#333");
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
                top + plot_h - bh,
                bar_w * 0.95,
                escape(series.get(si).map_or("", String::as_str)),
                short(*v)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            top + plot_h + 18.0,
            escape(&g.label)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{}" stroke="#333"/>"##,
        top + plot_h
    );
    for (si, name) in series.iter().enumerate() {
        let y = top + 10.0 + 20.0 * si as f64;
        let color = COLORS.get(si % COLORS.len()).copied().unwrap_or("#333");
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{color}"/>"#,
            w - right + 15.0,
            y - 10.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{y}">{}</text>"#,
            w - right + 32.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1234567 -> "1.23M", 0.45 -> "0.45".
pub fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bars_and_legend() {
        let svg = bar_chart(
            "t",
            "msg/s",
            &["a".into(), "b<".into()],
            &[
                Group {
                    label: "g1".into(),
                    values: vec![Some(10.0), None],
                },
                Group {
                    label: "g2".into(),
                    values: vec![Some(5.0), Some(20.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 2,
            "three bars and two legend boxes"
        );
        assert!(svg.contains("b&lt;"));
        assert_eq!(short(1_500_000.0), "1.50M");
    }
}
