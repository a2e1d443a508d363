//! Charts as SVG, drawn here: a bar chart, a line chart and a heat-map,
//! each with axes, labels and an accessible `<title>` and `<desc>`. No
//! script, no style sheet of their own (presentation attributes only), so
//! they pass the dashboard's content security policy.
//!
//! ```
//! use tessera_office::dashboard::svg::bar_chart;
//!
//! let svg = bar_chart("Spend per segment", &[("loyal".into(), 1200.0), ("new".into(), 300.0)], &|v| format!("{v:.0}"));
//! assert!(svg.starts_with("<svg") && svg.contains("<title>Spend per segment</title>"));
//! ```

use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 60.0;
/// Colours of the series, in turn.
const PALETTE: [&str; 6] = ["#2f6db5", "#d9822b", "#3a9e5c", "#b53a3a", "#7d5bb5", "#5b8fa8"];

/// Escapes text for HTML and SVG (element content and attribute values).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn open(out: &mut String, title: &str, desc: &str, height: f64) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" role=\"img\" viewBox=\"0 0 {WIDTH} {height}\" \
         width=\"{WIDTH}\" height=\"{height}\"><title>{}</title><desc>{}</desc>\
         <text x=\"10\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        escape(title),
        escape(desc),
        escape(title)
    );
}

/// A round step for about five ticks up to `max`.
fn step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The value axis (left), its grid and tick labels, for values `0..=top`.
fn value_axis(out: &mut String, top: f64, tick: f64, label: &dyn Fn(f64) -> String) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= top + tick / 2.0 {
        let y = TOP + plot_h - v / top * plot_h;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&label(v))
        );
        v += tick;
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#444\"/>\
         <line x1=\"{LEFT}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#444\"/>",
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM
    );
}

/// The scale's top for the largest value: a whole number of ticks.
fn scale(max: f64) -> (f64, f64) {
    let tick = step(max);
    let top = (max / tick).ceil().max(1.0) * tick;
    (top, tick)
}

/// A bar chart of non-negative values, one bar per label; `label` formats
/// the axis ticks. Each bar has its own `<title>` (label and value).
pub fn bar_chart(title: &str, bars: &[(String, f64)], label: &dyn Fn(f64) -> String) -> String {
    let mut out = String::new();
    open(&mut out, title, &format!("bar chart, {} bars", bars.len()), HEIGHT);
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let (top, tick) = scale(max);
    value_axis(&mut out, top, tick, label);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / bars.len().max(1) as f64;
    for (i, (name, v)) in bars.iter().enumerate() {
        let v = v.max(0.0);
        let h = v / top * plot_h;
        let bar = (slot * 0.7).min(60.0);
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let y = TOP + plot_h - h;
        let (lx, ly) = (x + bar / 2.0, HEIGHT - BOTTOM + 16.0);
        // Labels wider than their slot are slanted so they do not overlap.
        let anchor = if name.chars().count() as f64 * 6.5 > slot {
            format!("text-anchor=\"end\" transform=\"rotate(-20 {lx:.1} {ly:.1})\" ")
        } else {
            "text-anchor=\"middle\" ".to_owned()
        };
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {}</title></rect>\
             <text x=\"{lx:.1}\" y=\"{ly:.1}\" {}font-size=\"11\">{}</text>",
            bar,
            PALETTE[0],
            escape(name),
            escape(&label(v)),
            anchor,
            escape(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// A line chart: one line per series (name, values at each x label);
/// a legend names the series.
pub fn line_chart(
    title: &str,
    x_labels: &[String],
    series: &[(String, Vec<f64>)],
    label: &dyn Fn(f64) -> String,
) -> String {
    let mut out = String::new();
    open(
        &mut out,
        title,
        &format!("line chart, {} series over {} periods", series.len(), x_labels.len()),
        HEIGHT,
    );
    let max = series.iter().flat_map(|s| s.1.iter().copied()).fold(0.0, f64::max);
    let (top, tick) = scale(max);
    value_axis(&mut out, top, tick, label);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = x_labels.len();
    let x_at = |i: usize| {
        if n <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let every = n.div_ceil(12).max(1);
    for (i, l) in x_labels.iter().enumerate() {
        if i % every == 0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
                x_at(i),
                HEIGHT - BOTTOM + 16.0,
                escape(l)
            );
        }
    }
    for (k, (name, values)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_at(i), TOP + plot_h - v.max(0.0) / top * plot_h))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            escape(name)
        );
        for (i, v) in values.iter().enumerate() {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{} {}: {}</title></circle>",
                x_at(i),
                TOP + plot_h - v.max(0.0) / top * plot_h,
                escape(name),
                escape(x_labels.get(i).map_or("", String::as_str)),
                escape(&label(*v))
            );
        }
        let lx = LEFT + 130.0 * k as f64;
        let _ = write!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            HEIGHT - 24.0,
            lx + 16.0,
            HEIGHT - 14.0,
            escape(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// A heat-map of shares (0–1): one row per label, one cell per column,
/// darker for more; each cell carries its percentage as text and title.
pub fn heat_map(title: &str, rows: &[(String, Vec<f64>)], column_label: &dyn Fn(usize) -> String) -> String {
    let columns = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let cell_h = 24.0;
    let height = TOP + 16.0 + cell_h * rows.len() as f64 + 20.0;
    let mut out = String::new();
    open(
        &mut out,
        title,
        &format!("heat map, {} rows by {columns} columns", rows.len()),
        height,
    );
    let cell_w = (WIDTH - LEFT - RIGHT) / columns.max(1) as f64;
    for c in 0..columns {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            LEFT + cell_w * (c as f64 + 0.5),
            TOP + 12.0,
            escape(&column_label(c))
        );
    }
    for (r, (name, values)) in rows.iter().enumerate() {
        let y = TOP + 16.0 + cell_h * r as f64;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
            LEFT - 6.0,
            y + cell_h * 0.65,
            escape(name)
        );
        for (c, v) in values.iter().enumerate() {
            let v = v.clamp(0.0, 1.0);
            // From near white to the palette's blue.
            let mix = |from: f64, to: f64| (from + (to - from) * v).round() as u8;
            let fill = format!(
                "#{:02x}{:02x}{:02x}",
                mix(240.0, 47.0),
                mix(245.0, 109.0),
                mix(250.0, 181.0)
            );
            let ink = if v > 0.5 { "#fff" } else { "#222" };
            let pct = format!("{:.0}%", v * 100.0);
            let x = LEFT + cell_w * c as f64;
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" stroke=\"#fff\">\
                 <title>{} {}: {pct}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"{ink}\">{pct}</text>",
                cell_w,
                cell_h,
                escape(name),
                escape(&column_label(c)),
                x + cell_w / 2.0,
                y + cell_h * 0.65
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_charts_escape_labels_and_carry_titles() {
        let svg = bar_chart("a <b>", &[("x&y".into(), 3.0)], &|v| format!("{v}"));
        assert!(svg.contains("<title>a &lt;b&gt;</title>"));
        assert!(svg.contains("x&amp;y"));
        assert!(!svg.contains("<b>"));
        let line = line_chart(
            "l",
            &["2026-11".into(), "2026-12".into()],
            &[("issued".into(), vec![1.0, 5.0])],
            &|v| format!("{v}"),
        );
        assert_eq!(line.matches("<circle").count(), 2);
        let heat = heat_map("h", &[("2026-11".into(), vec![1.0, 0.25])], &|c| format!("M{c}"));
        assert!(heat.contains(">25%</text>") && heat.contains(">100%</text>"));
    }

    #[test]
    fn dashboard_chart_scales_are_round_and_cover_the_maximum() {
        assert_eq!(scale(0.0), (1.0, 1.0));
        assert_eq!(scale(7.0), (8.0, 2.0));
        assert_eq!(scale(1234.0), (1500.0, 500.0));
        assert_eq!(scale(950.0), (1000.0, 200.0));
        let empty = bar_chart("none", &[], &|v| format!("{v}"));
        assert!(empty.ends_with("</svg>"));
    }
}
