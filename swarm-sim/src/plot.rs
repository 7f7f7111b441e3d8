//! A small SVG line chart, written by hand: no plotting dependency for two kinds of chart.

use std::fmt::Write;

/// One line: a label, a colour, and points (x, y).
pub struct Series {
    pub label: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A chart with a left axis; `y_max` fixes its top.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub y_max: f64,
    pub series: Vec<Series>,
}

const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 30.0;

impl Chart {
    /// The chart as an SVG `<g>` placed `y_offset` pixels down.
    fn group(&self, y_offset: f64) -> String {
        let x_max = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1e-9, f64::max);
        let y_max = self.y_max.max(1e-9);
        let x = |v: f64| LEFT + v / x_max * W;
        let y = |v: f64| TOP + H - (v / y_max).clamp(0.0, 1.0) * H;
        let mut g = String::new();
        let _ = write!(
            g,
            r#"<g transform="translate(0,{y_offset})"><text x="{LEFT}" y="18" font-weight="bold">{}</text>"#,
            escape(&self.title)
        );
        let _ = write!(
            g,
            r##"<rect x="{LEFT}" y="{TOP}" width="{W}" height="{H}" fill="none" stroke="#999"/>"##
        );
        for i in 0..=4 {
            let v = y_max * f64::from(i) / 4.0;
            let _ = write!(
                g,
                r##"<text x="{}" y="{}" text-anchor="end" font-size="11">{}</text><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#eee"/>"##,
                LEFT - 4.0,
                y(v) + 4.0,
                trim(v),
                LEFT + W,
                y(v),
                y(v)
            );
        }
        for i in 0..=4 {
            let v = x_max * f64::from(i) / 4.0;
            let _ = write!(
                g,
                r#"<text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text>"#,
                x(v),
                TOP + H + 14.0,
                trim(v)
            );
        }
        let _ = write!(
            g,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text><text x="14" y="{}" font-size="12" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
            LEFT + W / 2.0,
            TOP + H + 30.0,
            escape(&self.x_label),
            TOP + H / 2.0,
            TOP + H / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let points: Vec<String> = series
                .points
                .iter()
                .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
                .collect();
            let _ = write!(
                g,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                series.colour,
                points.join(" ")
            );
            for (px, py) in &series.points {
                let _ = write!(
                    g,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                    x(*px),
                    y(*py),
                    series.colour
                );
            }
            let ly = TOP + 14.0 + 16.0 * i as f64;
            let _ = write!(
                g,
                r#"<rect x="{}" y="{}" width="12" height="4" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
                LEFT + W - 200.0,
                ly - 4.0,
                series.colour,
                LEFT + W - 182.0,
                ly,
                escape(&series.label)
            );
        }
        g.push_str("</g>");
        g
    }
}

/// Charts stacked vertically in one SVG document.
pub fn svg(charts: &[Chart]) -> String {
    let height = charts.len() as f64 * (H + TOP + 50.0);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#,
        LEFT + W + 20.0
    );
    for (i, chart) in charts.iter().enumerate() {
        out.push_str(&chart.group(i as f64 * (H + TOP + 50.0)));
    }
    out.push_str("</svg>\n");
    out
}

fn trim(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_well_formed_svg_with_its_labels() {
        let chart = Chart {
            title: "continuity <over> time".into(),
            x_label: "s".into(),
            y_label: "share".into(),
            y_max: 1.0,
            series: vec![Series {
                label: "all".into(),
                colour: "#1f77b4",
                points: vec![(0.0, 0.5), (10.0, 1.0)],
            }],
        };
        let out = svg(&[chart]);
        assert!(out.starts_with("<svg") && out.ends_with("</svg>\n"));
        assert!(out.contains("continuity &lt;over&gt; time"));
        assert_eq!(out.matches("<polyline").count(), 1);
        assert_eq!(out.matches("<circle").count(), 2);
    }
}
