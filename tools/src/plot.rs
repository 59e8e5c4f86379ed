//! Charts for BENCHMARKS.md, drawn with plotters as SVG: panels of lines (one per broker)
//! over an ordered family of cells or over latency percentiles, on a log y axis because the
//! brokers' figures span decades; and horizontal bars (linear, from zero) for the headline.
//! Every broker keeps its colour across charts.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line: a name and a value per x position (None or <= 0: no point).
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// One per x label.
    pub values: Vec<Option<f64>>,
}

/// One panel of a figure.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Shown above the panel.
    pub title: String,
    /// The x positions, in order.
    pub x_labels: Vec<String>,
    /// The lines.
    pub series: Vec<Series>,
}

/// The colour of series `name`: the brokers' fixed, anything else by position.
fn colour(name: &str, index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 13] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(227, 119, 194),
        RGBColor(0, 0, 128),
        RGBColor(0, 100, 0),
        RGBColor(128, 0, 0),
    ];
    let fixed = [
        "ringmq-1shard",
        "relay",
        "ringmq-2shards",
        "mosquitto",
        "rumqttd",
        "ringmq-sync",
        "ringmq-redis",
        "aedes-redis",
        "ringmq-asyncapi",
        "ringmq-kafka-local",
        "rdkafka-direct",
        "ringmq-cluster-2nodes",
        "ringmq-cluster-3nodes",
    ];
    let i = fixed.iter().position(|b| *b == name).unwrap_or(index);
    PALETTE.get(i % PALETTE.len()).copied().unwrap_or(BLACK)
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

/// The positive values' range on a log axis: widened so points sit inside the panel, then
/// out to whole decades (plotters labels the powers of ten, so a range inside one decade
/// would have no label).
fn log_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return None;
    }
    let lo = 10f64.powf((lo / 1.3).log10().floor());
    let hi = 10f64.powf((hi * 1.3).log10().ceil()).max(lo * 10.0);
    Some((lo, hi))
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    y_desc: &str,
    lines: bool,
) -> anyhow::Result<()> {
    let all = panel
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied());
    let Some((lo, hi)) = log_range(all) else {
        area.titled(&format!("{}: no data", panel.title), ("sans-serif", 14))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        return Ok(());
    };
    let n = panel.x_labels.len().max(1);
    // A usize range's last value is a key point too: 0..n - 1 gives n segments.
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(62)
        .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), (lo..hi).log_scale())
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    let labels = &panel.x_labels;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(y_desc)
        .y_label_formatter(&|v| short(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    for (k, s) in panel.series.iter().enumerate() {
        let c = colour(&s.name, k);
        let points: Vec<(SegmentValue<usize>, f64)> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.filter(|v| v.is_finite() && *v > 0.0)
                    .map(|v| (SegmentValue::CenterOf(i), v))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        if lines {
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        }
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    Ok(())
}

/// The names of the series with a point in some panel, once each, in order of appearance,
/// with their colours.
fn legend_entries(panels: &[Panel]) -> Vec<(String, RGBColor)> {
    let mut seen: Vec<(String, RGBColor)> = Vec::new();
    for panel in panels {
        for (k, s) in panel.series.iter().enumerate() {
            let drawn = s.values.iter().flatten().any(|v| v.is_finite() && *v > 0.0);
            if drawn && !seen.iter().any(|(n, _)| *n == s.name) {
                seen.push((s.name.clone(), colour(&s.name, k)));
            }
        }
    }
    seen
}

/// One legend for the whole figure, in its own column (never over the data).
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[(String, RGBColor)],
) -> anyhow::Result<()> {
    let style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (name, c)) in entries.iter().enumerate() {
        let y = 60 + 20 * i32::try_from(i).unwrap_or(0);
        area.draw(&Circle::new((12, y), 5, c.filled()))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        area.draw(&Text::new(name.clone(), (24, y), style.clone()))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    Ok(())
}

/// A figure of `panels` side by side under `title`, each with a log y axis described by
/// `y_desc`; `lines` joins a series' points (an ordered x axis), else points only.
pub fn panels(title: &str, y_desc: &str, panels: &[Panel], lines: bool) -> anyhow::Result<String> {
    let width = 360 * u32::try_from(panels.len().max(1)).unwrap_or(1) + LEGEND;
    with_legend(width, title, &legend_entries(panels), |body| {
        let areas = body.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, y_desc, lines)?;
        }
        Ok(())
    })
}

/// Width of a figure's legend column.
const LEGEND: u32 = 140;

/// An SVG `width` wide under `title`, with `entries` in a legend column at the right; `draw`
/// fills the rest.
fn with_legend(
    width: u32,
    title: &str,
    entries: &[(String, RGBColor)],
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 380)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let body = root
            .titled(title, ("sans-serif", 18))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let (body, legend) = body.split_horizontally(width - LEGEND);
        draw_legend(&legend, entries)?;
        draw(&body)?;
        root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    Ok(svg)
}

/// One line of a [`timeline`]: a name and its (x, y) points in x order.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Legend name (also picks the colour).
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// A figure of lines over time on linear axes from zero (x in seconds, y described by
/// `y_desc`): what a value did over a run, such as the broker's memory.
pub fn timeline(title: &str, y_desc: &str, traces: &[Trace]) -> anyhow::Result<String> {
    let x_max = traces
        .iter()
        .flat_map(|t| t.points.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let y_max = traces
        .iter()
        .flat_map(|t| t.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.15;
    let entries: Vec<(String, RGBColor)> = traces
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.points.is_empty())
        .map(|(k, t)| (t.name.clone(), colour(&t.name, k)))
        .collect();
    with_legend(760 + LEGEND, title, &entries, |body| {
        let mut chart = ChartBuilder::on(body)
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(62)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        chart
            .configure_mesh()
            .x_desc("seconds since the clients connected")
            .y_desc(y_desc)
            .y_label_formatter(&|v| short(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        for (k, t) in traces.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(
                    t.points.iter().copied(),
                    colour(&t.name, k).stroke_width(2),
                ))
                .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        }
        Ok(())
    })
}

/// One bar of a [`bars`] figure.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Who (also picks the colour).
    pub name: String,
    /// The value (None or <= 0: "not measured").
    pub value: Option<f64>,
}

/// Horizontal bars, one figure per `(title, unit, bars)` side by side, on linear x axes from
/// zero (a bar's length is its value); each bar labelled with its name and value.
pub fn bars(title: &str, figures: &[(&str, &str, Vec<Bar>)]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let width = 40 + 440 * u32::try_from(figures.len().max(1)).unwrap_or(1);
        let root = SVGBackend::with_string(&mut svg, (width, 300)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let body = root
            .titled(title, ("sans-serif", 18))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let areas = body.split_evenly((1, figures.len().max(1)));
        for (area, (caption, unit, bars)) in areas.iter().zip(figures) {
            let hi = bars
                .iter()
                .filter_map(|b| b.value)
                .filter(|v| v.is_finite() && *v > 0.0)
                .fold(0.0_f64, f64::max);
            if hi <= 0.0 {
                continue;
            }
            // Room right of the longest bar for its label.
            let (lo, hi) = (0.0, hi * 1.9);
            let n = bars.len().max(1) as f64;
            let mut chart = ChartBuilder::on(area)
                .caption(*caption, ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(4)
                .build_cartesian_2d(lo..hi, 0.0..n)
                .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_labels(5)
                .x_label_formatter(&|v| short(*v))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
            let style = TextStyle::from(("sans-serif", 12).into_font())
                .pos(Pos::new(HPos::Left, VPos::Center));
            for (i, bar) in bars.iter().enumerate() {
                // Top to bottom in the order given.
                let y = n - 1.0 - i as f64;
                let text = match bar.value.filter(|v| *v > 0.0) {
                    Some(v) => {
                        let c = colour(&bar.name, i);
                        chart
                            .draw_series(std::iter::once(Rectangle::new(
                                [(lo, y + 0.15), (v, y + 0.85)],
                                c.filled(),
                            )))
                            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
                        (format!("{} {} {unit}", bar.name, short(v)), v + hi * 0.01)
                    }
                    None => (format!("{}: not measured", bar.name), hi * 0.01),
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        text.0,
                        (text.1, y + 0.5),
                        style.clone(),
                    )))
                    .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
            }
        }
        root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_draw_a_point_per_value_and_a_legend_per_series() {
        let panel = |t: &str| Panel {
            title: t.into(),
            x_labels: vec!["16 B".into(), "64 B".into(), "1 KiB".into()],
            series: vec![
                Series {
                    name: "ringmq-1shard".into(),
                    values: vec![Some(1.5e6), Some(1.4e6), None],
                },
                Series {
                    name: "mosquitto".into(),
                    values: vec![Some(7e4), Some(0.0), Some(6e4)],
                },
            ],
        };
        let svg = panels("t", "msg/s", &[panel("QoS 0"), panel("QoS 1")], true).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("QoS 0") && svg.contains("QoS 1") && svg.contains("64 B"));
        // Two panels x two points per series, and one legend marker per series.
        assert_eq!(svg.matches("<circle").count(), 2 * 4 + 2, "{svg}");
        assert!(
            svg.contains("1.00M"),
            "log axis labels as short numbers: {svg}"
        );
        let empty = Panel {
            title: "none".into(),
            x_labels: vec!["a".into()],
            series: vec![],
        };
        assert!(panels("t", "us", &[empty], false)
            .unwrap()
            .contains("none: no data"));
    }

    #[test]
    fn a_timeline_draws_a_line_per_trace_and_a_legend_entry() {
        let traces = [
            Trace {
                name: "ringmq-1shard".into(),
                points: vec![(0.0, 10.0), (0.5, 12.0), (1.0, 12.5)],
            },
            Trace {
                name: "mosquitto".into(),
                points: vec![(0.0, 5.0), (1.0, 30.0)],
            },
        ];
        let svg = timeline("RAM", "MiB", &traces).unwrap();
        // One 2-pixel line per trace (the axes' ticks are thin polylines).
        let lines = svg
            .split("<polyline")
            .skip(1)
            .filter(|p| {
                p.split('>')
                    .next()
                    .unwrap_or("")
                    .contains("stroke-width=\"2\"")
            })
            .count();
        assert_eq!(lines, 2, "{svg}");
        assert!(svg.contains("ringmq-1shard") && svg.contains("mosquitto"));
    }

    #[test]
    fn log_ranges_are_whole_decades() {
        assert_eq!(log_range([16e3, 55e3].into_iter()), Some((1e4, 1e5)));
        assert_eq!(log_range([100.0].into_iter()), Some((10.0, 1000.0)));
        assert_eq!(log_range([0.0, f64::NAN].into_iter()), None);
    }

    #[test]
    fn bars_label_each_value_or_say_not_measured() {
        let svg = bars(
            "h",
            &[(
                "delivered msg/s",
                "msg/s",
                vec![
                    Bar {
                        name: "ringmq-1shard".into(),
                        value: Some(1.6e6),
                    },
                    Bar {
                        name: "rumqttd".into(),
                        value: None,
                    },
                ],
            )],
        )
        .unwrap();
        assert!(svg.contains("ringmq-1shard 1.60M msg/s"), "{svg}");
        assert!(svg.contains("rumqttd: not measured"), "{svg}");
        assert_eq!(short(1_500_000.0), "1.50M");
        assert_eq!(short(0.456), "0.46");
    }
}
