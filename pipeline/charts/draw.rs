//! Renders one [`InstanceChart`] as SVG with plotters.
//!
//! In: the chart and its telemetry panels. Out: the SVG text. Layout, top to bottom: a
//! header with the title, the failure's story in one line and the markers' labels;
//! the telemetry panels; the anomaly score; the signature confidence. Every panel
//! shares the UTC time axis and is crossed by the same vertical markers, whose kinds
//! the score panel's legend names.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::panels::{max_step, segments, MetricPanel, Segment};
use super::InstanceChart;

const WIDTH: u32 = 1280;
const PANEL_HEIGHT: u32 = 200;
/// Room under the last panel for the time axis' labels and description.
const AXIS_HEIGHT: u32 = 40;
const MARGIN_LEFT: u32 = 10;
const MARGIN_RIGHT: u32 = 30;
const Y_LABELS: u32 = 90;
/// Left and right edge of every panel's plotting area, px: markers' labels in the
/// header are placed on the same scale.
const PLOT_LEFT: u32 = MARGIN_LEFT + Y_LABELS;
const PLOT_RIGHT: u32 = WIDTH - MARGIN_RIGHT;
/// First row of marker labels, and the height of one.
const LABELS_TOP: u32 = 60;
const LABEL_ROW: u32 = 18;
const MAX_LABEL_ROWS: usize = 8;
const FONT: &str = "sans-serif";

/// Line colours of the telemetry panels (the usual categorical palette).
const PALETTE: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
const SCORE: RGBColor = RGBColor(20, 50, 140);
const CONFIDENCE: RGBColor = RGBColor(120, 40, 150);
const ONSET: RGBColor = RGBColor(110, 110, 110);
const FAILURE: RGBColor = RGBColor(210, 20, 20);
const APPLIED: RGBColor = RGBColor(0, 140, 60);
const REFUSED: RGBColor = RGBColor(230, 120, 0);
const OTHER: RGBColor = RGBColor(150, 60, 160);

pub(super) enum RenderError {
    Empty,
    Plot(String),
}

type Drawn<T> = Result<T, Box<dyn std::error::Error>>;

/// A vertical marker across every panel.
struct VLine {
    t: i64,
    /// Written in the header above it.
    text: String,
    /// What the score panel's legend calls this kind of marker.
    legend: String,
    color: RGBColor,
    dashed: bool,
}

/// `HH:MM` in UTC, with the date in front when the chart spans more than a day.
pub(super) fn clock(ms: i64, with_date: bool) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) if with_date => t.format("%m-%d %H:%M").to_string(),
        Some(t) => t.format("%H:%M").to_string(),
        None => ms.to_string(),
    }
}

fn markers(chart: &InstanceChart) -> Vec<VLine> {
    let hm = |ms| clock(ms, false);
    let mut out = vec![VLine {
        t: chart.onset_ms,
        text: format!("onset {}", hm(chart.onset_ms)),
        legend: "failure onset".to_owned(),
        color: ONSET,
        dashed: true,
    }];
    if let Some(f) = chart.failure_ms {
        out.push(VLine {
            t: f,
            text: format!("failed {}", hm(f)),
            legend: "failure".to_owned(),
            color: FAILURE,
            dashed: false,
        });
    }
    // Untouched, it would have failed here: said when it did not fail, or failed later.
    if let Some(e) = chart.expected_failure_ms.filter(|&e| chart.failure_ms.is_none_or(|f| f != e)) {
        out.push(VLine {
            t: e,
            text: format!("would have failed {}", hm(e)),
            legend: "would have failed (untouched)".to_owned(),
            color: FAILURE,
            dashed: true,
        });
    }
    for m in &chart.markers {
        let color = match m.outcome.as_str() {
            "applied" => APPLIED,
            "refused" => REFUSED,
            _ => OTHER,
        };
        out.push(VLine {
            t: m.timestamp_ms,
            text: format!("{} — {} {}", m.label, m.outcome, hm(m.timestamp_ms)),
            legend: format!("adjustment {}", m.outcome),
            color,
            dashed: false,
        });
    }
    out.sort_by_key(|m| m.t);
    out
}

/// Estimated width of `text` at 12 px: SVG viewers lay text out themselves, so this
/// only keeps labels from running into each other.
fn text_width(text: &str) -> u32 {
    text.chars().count() as u32 * 7
}

/// Label rows for the markers: each label goes to the first row where it does not
/// overlap the previous one. Returns per marker (row, x, anchored right), and rows used.
fn place_labels(lines: &[VLine], x_px: &dyn Fn(i64) -> i32) -> (Vec<(usize, i32, bool)>, usize) {
    let mut ends: Vec<i32> = Vec::new();
    let mut out = Vec::new();
    for l in lines {
        let x = x_px(l.t);
        let w = text_width(&l.text) as i32;
        let right = x + 4 + w > WIDTH as i32 - 4;
        let (start, end) = if right { (x - 4 - w, x - 4) } else { (x + 4, x + 4 + w) };
        let row = match ends.iter().position(|&e| e + 10 < start) {
            Some(r) => r,
            None if ends.len() < MAX_LABEL_ROWS => {
                ends.push(i32::MIN);
                ends.len() - 1
            }
            // Out of rows: the least crowded one.
            None => ends.iter().enumerate().min_by_key(|(_, &e)| e).map_or(0, |(r, _)| r),
        };
        ends[row] = ends[row].max(end);
        out.push((row, x, right));
    }
    (out, ends.len())
}

pub(super) fn render(chart: &InstanceChart, panels: &[MetricPanel]) -> Result<String, RenderError> {
    let lines = markers(chart);
    let times = chart
        .samples
        .iter()
        .map(|s| s.timestamp_ms)
        .chain(chart.scores.iter().map(|p| p.timestamp_ms))
        .chain(lines.iter().map(|l| l.t));
    let (Some(lo), Some(hi)) = (times.clone().min(), times.max()) else { return Err(RenderError::Empty) };
    if chart.samples.is_empty() && chart.scores.is_empty() {
        return Err(RenderError::Empty);
    }
    // A minute of room either side, so a marker at the edge is not hidden by the axis.
    let (t0, t1) = (lo - 60_000, hi.max(lo + 1) + 60_000);
    let x_px = |t: i64| {
        let share = (t - t0) as f64 / (t1 - t0) as f64;
        PLOT_LEFT as i32 + (share * f64::from(PLOT_RIGHT - PLOT_LEFT)).round() as i32
    };
    let (placed, rows) = place_labels(&lines, &x_px);
    let header = LABELS_TOP + rows as u32 * LABEL_ROW + 8;
    let n = panels.len() as u32 + 2;
    let height = header + n * PANEL_HEIGHT + AXIS_HEIGHT;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let drawn: Drawn<()> = (|| {
            root.fill(&WHITE)?;
            let (top, body) = root.split_vertically(header);
            draw_header(&top, chart, &lines, &placed)?;
            let plot = Plot { chart, lines: &lines, t0, t1, first: lo, day0: t0.div_euclid(DAY_MS) * DAY_MS };
            let mut rest = body;
            for panel in panels {
                let (area, r) = rest.split_vertically(PANEL_HEIGHT);
                rest = r;
                plot.metric_panel(&area, panel)?;
            }
            let (area, r) = rest.split_vertically(PANEL_HEIGHT);
            plot.score_panel(&area)?;
            plot.confidence_panel(&r)?;
            root.present()?;
            Ok(())
        })();
        drawn.map_err(|e| RenderError::Plot(e.to_string()))?;
    }
    Ok(svg)
}

fn draw_header(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &InstanceChart,
    lines: &[VLine],
    placed: &[(usize, i32, bool)],
) -> Drawn<()> {
    let how = if chart.holdout {
        "holdout: left unadjusted on purpose".to_owned()
    } else if chart.markers.is_empty() {
        "no adjustment decided".to_owned()
    } else {
        let n = chart.markers.len();
        format!("adjusted: {n} adjustment{} decided", if n == 1 { "" } else { "s" })
    };
    let title = format!("{} · {} on {}/{} · {how}", chart.instance, chart.kind, chart.app_type, chart.function);
    area.draw(&Text::new(title, (MARGIN_LEFT as i32, 8), (FONT, 20).into_font().style(FontStyle::Bold)))?;
    let hm = |ms| clock(ms, false);
    let fate = match (chart.failure_ms, chart.expected_failure_ms) {
        (Some(f), _) => format!("failed at {} UTC", hm(f)),
        (None, Some(e)) if chart.holdout => format!("not failed by the end of the run; expected at {} UTC", hm(e)),
        (None, Some(e)) => format!("averted: would have failed at {} UTC", hm(e)),
        (None, None) => "no failure by the end of the run".to_owned(),
    };
    let story = format!("failure onset at {} UTC · {fate}", hm(chart.onset_ms));
    area.draw(&Text::new(story, (MARGIN_LEFT as i32, 34), (FONT, 14).into_font().color(&BLACK.mix(0.75))))?;
    let bottom = area.dim_in_pixel().1 as i32;
    for (l, &(row, x, right)) in lines.iter().zip(placed) {
        let y = (LABELS_TOP + row as u32 * LABEL_ROW) as i32;
        let (tx, anchor) = if right { (x - 4, HPos::Right) } else { (x + 4, HPos::Left) };
        let style = (FONT, 12).into_font().color(&l.color).pos(Pos::new(anchor, VPos::Top));
        area.draw(&Text::new(l.text.clone(), (tx, y), style))?;
        // A leader from the label down to the panels, where the marker line goes on.
        area.draw(&PathElement::new(vec![(x, y), (x, bottom)], l.color.mix(0.5).stroke_width(1)))?;
    }
    Ok(())
}

/// What every panel shares: the time axis and the markers.
struct Plot<'a> {
    chart: &'a InstanceChart,
    lines: &'a [VLine],
    t0: i64,
    t1: i64,
    /// The first time of the data (the axis starts a little before it).
    first: i64,
    /// Midnight UTC before `t0`: the x axis counts minutes from it, so that its ticks
    /// fall on round minutes of the clock.
    day0: i64,
}

const MINUTE: f64 = 60_000.0;
const DAY_MS: i64 = 24 * 3_600_000;

type Ctx<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

impl Plot<'_> {
    /// Position of event time `t` on the x axis.
    fn x(&self, t: i64) -> f64 {
        (t - self.day0) as f64 / MINUTE
    }

    fn context<'a, 'b>(
        &self,
        area: &'a DrawingArea<SVGBackend<'b>, Shift>,
        y: (f64, f64),
        y_desc: &str,
        bottom: bool,
    ) -> Drawn<Ctx<'a, 'b>> {
        let mut ctx = ChartBuilder::on(area)
            .margin_left(MARGIN_LEFT)
            .margin_right(MARGIN_RIGHT)
            .margin_top(8)
            .margin_bottom(if bottom { 4 } else { 0 })
            .x_label_area_size(if bottom { AXIS_HEIGHT + 4 } else { 20 })
            .y_label_area_size(Y_LABELS)
            .build_cartesian_2d(self.x(self.t0)..self.x(self.t1), y.0..y.1)?;
        let day0 = self.day0;
        let with_date = self.t1 - self.t0 > 20 * 3_600_000;
        let fmt = move |x: &f64| clock(day0 + (x * MINUTE).round() as i64, with_date);
        let y_fmt = |v: &f64| {
            let s = format!("{v:.2}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        };
        let day = chrono::DateTime::from_timestamp_millis(self.first).map(|t| t.format("%Y-%m-%d").to_string());
        let x_desc = format!("time (UTC, from {})", day.unwrap_or_default());
        let mut mesh = ctx.configure_mesh();
        mesh.x_labels(14)
            .y_labels(6)
            .x_label_formatter(&fmt)
            .y_label_formatter(&y_fmt)
            .y_desc(y_desc)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 14))
            .light_line_style(BLACK.mix(0.03))
            .bold_line_style(BLACK.mix(0.1));
        if bottom {
            mesh.x_desc(x_desc);
        }
        mesh.draw()?;
        Ok(ctx)
    }

    /// The vertical markers; in the panel with `legend`, each kind of marker is
    /// named once in its legend.
    fn draw_markers(&self, ctx: &mut Ctx<'_, '_>, y: (f64, f64), legend: bool) -> Drawn<()> {
        let mut named: Vec<&str> = Vec::new();
        for l in self.lines {
            let t = self.x(l.t);
            let style = l.color.stroke_width(if l.dashed { 1 } else { 2 });
            let points = vec![(t, y.0), (t, y.1)];
            let anno = if l.dashed {
                ctx.draw_series(DashedLineSeries::new(points, 6, 4, style))?
            } else {
                ctx.draw_series(LineSeries::new(points, style))?
            };
            if legend && !named.contains(&l.legend.as_str()) {
                named.push(&l.legend);
                anno.label(l.legend.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        Ok(())
    }

    fn legend<'a, 'b: 'a>(ctx: &mut Ctx<'a, 'b>) -> Drawn<()> {
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    }

    fn segments(
        &self,
        ctx: &mut Ctx<'_, '_>,
        segs: &[Segment],
        style: ShapeStyle,
        label: &str,
        dashed: bool,
    ) -> Drawn<()> {
        for (k, seg) in segs.iter().enumerate() {
            let points: Vec<(f64, f64)> = seg.iter().map(|&(t, v)| (self.x(t), v)).collect();
            let anno = if dashed {
                ctx.draw_series(DashedLineSeries::new(points, 5, 3, style))?
            } else {
                ctx.draw_series(LineSeries::new(points, style))?
            };
            if k == 0 {
                anno.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        Ok(())
    }

    fn metric_panel(&self, area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &MetricPanel) -> Drawn<()> {
        let y = (0.0, if panel.max > 0.0 { panel.max * 1.1 } else { 1.0 });
        let mut ctx = self.context(area, y, panel.y_desc, false)?;
        self.draw_markers(&mut ctx, y, false)?;
        for (i, line) in panel.lines.iter().enumerate() {
            let style = PALETTE[i % PALETTE.len()].stroke_width(2);
            self.segments(&mut ctx, &line.segments, style, &line.name, false)?;
        }
        Self::legend(&mut ctx)
    }

    fn score_panel(&self, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Drawn<()> {
        let y = (0.0, 100.0);
        let mut ctx = self.context(area, y, "anomaly score (0–100)", false)?;
        let faint = BLACK.mix(0.3).stroke_width(1);
        for (i, tier) in [30.0, 70.0, 90.0].into_iter().enumerate() {
            let anno = ctx.draw_series(DashedLineSeries::new(
                vec![(self.x(self.t0), tier), (self.x(self.t1), tier)],
                3,
                3,
                faint,
            ))?;
            if i == 0 {
                anno.label("tier boundaries 30 / 70 / 90")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], faint));
            }
        }
        let points = &self.chart.scores;
        let step = max_step(&points.iter().map(|p| p.timestamp_ms).collect::<Vec<_>>());
        let segs = segments(points.iter().map(|p| (p.timestamp_ms, p.anomaly_score)), step);
        self.segments(&mut ctx, &segs, SCORE.stroke_width(2), "anomaly score of the window", false)?;
        self.draw_markers(&mut ctx, y, true)?;
        Self::legend(&mut ctx)
    }

    fn confidence_panel(&self, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Drawn<()> {
        let y = (0.0, 1.0);
        let mut ctx = self.context(area, y, "signature confidence (0–1)", true)?;
        self.draw_markers(&mut ctx, y, false)?;
        let points = &self.chart.scores;
        let step = max_step(&points.iter().map(|p| p.timestamp_ms).collect::<Vec<_>>());
        // The best match changes with the window; whether it is a signature of the
        // chart's failure kind is what tells a reader the detector recognised it.
        let kind = self.chart.kind.as_str();
        let of = |same: bool| {
            let values = points.iter().map(|p| {
                let matches = p.signature_kind.as_deref() == Some(kind);
                (p.timestamp_ms, p.confidence.filter(|_| matches == same))
            });
            segments(values, step)
        };
        let label = format!("confidence of the best signature, a {kind} one");
        self.segments(&mut ctx, &of(true), CONFIDENCE.stroke_width(2), &label, false)?;
        let other = "confidence of the best signature, of another kind";
        self.segments(&mut ctx, &of(false), BLACK.mix(0.35).stroke_width(1), other, false)?;
        let threshold = segments(points.iter().map(|p| (p.timestamp_ms, p.threshold)), step);
        let style = CONFIDENCE.mix(0.6).stroke_width(1);
        self.segments(&mut ctx, &threshold, style, "its threshold (alerts at or above)", true)?;
        Self::legend(&mut ctx)
    }
}
