//! One chart, described as data ([`Chart`]), drawn by `plotters` into SVG (inlined in
//! `report.html`, or a `.svg` file) or PNG (a bitmap; text drawn with the embedded DejaVu
//! Sans, so no system font is needed). The same description gives the same picture in every
//! format.

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

/// The embedded font (DejaVu Sans 2.37; licence in `assets/fonts/`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the embedded font once: plotters measures text with it (SVG layout) and draws
/// with it (PNG).
fn ensure_font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the embedded font could not be loaded".to_string())
    })
    .clone()
}

/// Series colours: distinguishable, colour-blind friendly (Okabe–Ito order).
const PALETTE: [(u8, u8, u8); 8] = [
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (120, 120, 120),
    (240, 228, 66),
];

pub fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// How a series is drawn.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Line,
    Points,
    /// Bars from 0 to y, each `width` wide starting at x.
    Bars {
        width: f64,
    },
    /// A shaded band from y (low) to the given highs, one per point.
    Band {
        high: Vec<f64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub name: String,
    pub kind: Kind,
    pub color: usize,
    pub points: Vec<(f64, f64)>,
}

/// A vertical line with a label (a percentile).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub color: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    /// File name stem of the exported picture, and the HTML id.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// Shaded x ranges with a label (the warmup).
    pub shaded: Vec<(f64, f64, String)>,
    /// Category names for x = 0, 1, … (a bar chart of categories).
    pub categories: Vec<String>,
}

impl Chart {
    pub fn new(id: &str, title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            markers: Vec::new(),
            shaded: Vec::new(),
            categories: Vec::new(),
        }
    }

    /// Whether there is anything to draw.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.points.is_empty())
    }

    /// The axis ranges: every point, band and marker inside, y from 0 (every chart here
    /// measures a non-negative quantity), a little headroom.
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let mut x = (f64::INFINITY, f64::NEG_INFINITY);
        let mut y = (0.0f64, f64::NEG_INFINITY);
        let mut see = |px: f64, py: f64| {
            if px.is_finite() {
                x = (x.0.min(px), x.1.max(px));
            }
            if py.is_finite() {
                y = (y.0.min(py), y.1.max(py));
            }
        };
        for s in &self.series {
            for (i, &(px, py)) in s.points.iter().enumerate() {
                see(px, py);
                match &s.kind {
                    Kind::Bars { width } => see(px + width, py),
                    Kind::Band { high } => see(px, high.get(i).copied().unwrap_or(py)),
                    _ => {}
                }
            }
        }
        for m in &self.markers {
            see(m.x, f64::NAN);
        }
        for (a, b, _) in &self.shaded {
            see(*a, f64::NAN);
            see(*b, f64::NAN);
        }
        if !self.categories.is_empty() {
            x = (-0.5, self.categories.len() as f64 - 0.5);
        }
        if !x.0.is_finite() {
            x = (0.0, 1.0);
        }
        if x.1 <= x.0 {
            x = (x.0 - 0.5, x.0 + 0.5);
        }
        if !y.1.is_finite() || y.1 <= y.0 {
            y.1 = y.0 + 1.0;
        }
        (x, (y.0, y.1 * 1.08))
    }
}

/// Tick labels without needless digits.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.2e}", v)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draws `chart` on `root`.
pub fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    ensure_font()?;
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let ((x0, x1), (y0, y1)) = chart.ranges();
    let mut c = ChartBuilder::on(root)
        .caption(&chart.title, (FAMILY, 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let cats = chart.categories.clone();
    let xfmt = move |v: &f64| {
        if cats.is_empty() {
            tick(*v)
        } else {
            let i = v.round();
            if (v - i).abs() < 1e-9 && i >= 0.0 {
                cats.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
    };
    let yfmt = |v: &f64| tick(*v);
    let mut mesh = c.configure_mesh();
    mesh.x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(RGBColor(240, 240, 240));
    if !chart.categories.is_empty() {
        mesh.x_labels(chart.categories.len() * 2 + 1);
    }
    mesh.draw().map_err(err)?;
    for (a, b, label) in &chart.shaded {
        let area = c.draw_series(std::iter::once(Rectangle::new(
            [(*a, y0), (*b, y1)],
            RGBColor(200, 200, 200).mix(0.35).filled(),
        )));
        area.map_err(err)?.label(label.as_str()).legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 12, y + 5)],
                RGBColor(200, 200, 200).filled(),
            )
        });
    }
    for s in &chart.series {
        let col = color(s.color);
        let name = s.name.clone();
        let drawn = match &s.kind {
            Kind::Line => c
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    col.stroke_width(2),
                ))
                .map_err(err)?,
            Kind::Points => c
                .draw_series(
                    s.points
                        .iter()
                        .map(|&p| Circle::new(p, 2, col.mix(0.6).filled())),
                )
                .map_err(err)?,
            Kind::Bars { width } => c
                .draw_series(s.points.iter().map(|&(x, y)| {
                    Rectangle::new([(x, 0.0), (x + width, y)], col.mix(0.75).filled())
                }))
                .map_err(err)?,
            Kind::Band { high } => {
                let mut poly: Vec<(f64, f64)> = s.points.clone();
                for (i, &(x, lo)) in s.points.iter().enumerate().rev() {
                    poly.push((x, high.get(i).copied().unwrap_or(lo)));
                }
                c.draw_series(std::iter::once(Polygon::new(poly, col.mix(0.2).filled())))
                    .map_err(err)?
            }
        };
        if !name.is_empty() {
            drawn
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        }
    }
    for m in &chart.markers {
        let col = color(m.color);
        c.draw_series(std::iter::once(PathElement::new(
            vec![(m.x, y0), (m.x, y1 / 1.08)],
            col.stroke_width(1),
        )))
        .map_err(err)?;
        c.draw_series(std::iter::once(Text::new(
            m.label.clone(),
            (m.x, y1 / 1.04),
            (FAMILY, 11).into_font().color(&col),
        )))
        .map_err(err)?;
    }
    let named = chart.series.iter().any(|s| !s.name.is_empty()) || !chart.shaded.is_empty();
    if named {
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FAMILY, 12))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Picture sizes: the HTML's SVGs scale to the page width; files are drawn at this size.
pub const WIDTH: u32 = 760;
pub const HEIGHT: u32 = 360;

/// The chart as an SVG document.
pub fn svg(chart: &Chart) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, chart)?;
    }
    Ok(out)
}

/// The chart as a PNG file.
pub fn png(chart: &Chart, path: &std::path::Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&root, chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Chart {
        let mut c = Chart::new("t", "Title <&>", "x", "y");
        c.series.push(Series {
            name: "a".into(),
            kind: Kind::Line,
            color: 0,
            points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
        });
        c.series.push(Series {
            name: String::new(),
            kind: Kind::Bars { width: 0.5 },
            color: 1,
            points: vec![(0.0, 1.0), (1.0, 2.0)],
        });
        c.markers.push(Marker {
            x: 1.5,
            label: "p50".into(),
            color: 2,
        });
        c.shaded.push((0.0, 0.5, "warmup".into()));
        c
    }

    #[test]
    fn svg_is_a_document_with_the_texts_escaped() {
        let s = svg(&sample()).unwrap();
        assert!(
            s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
            "{s}"
        );
        assert!(s.contains("Title &lt;&amp;&gt;"), "the title is escaped");
        assert!(s.contains("p50") && s.contains("warmup"));
        assert!(
            s.contains("<polyline") || s.contains("<path"),
            "the line is drawn"
        );
    }

    #[test]
    fn ranges_hold_points_bars_and_markers() {
        let ((x0, x1), (y0, y1)) = sample().ranges();
        assert_eq!((x0, y0), (0.0, 0.0));
        assert!(x1 >= 2.0 && y1 >= 3.0);
        // An empty chart still has a range.
        let ((a, b), (c, d)) = Chart::new("e", "", "", "").ranges();
        assert!(b > a && d > c);
    }

    #[test]
    fn ticks_drop_needless_digits() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(150.25), "150");
        assert_eq!(tick(0.0125), "0.0125");
    }
}
