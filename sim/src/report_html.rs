//! One run as a picture: a self-contained HTML file (inline CSS and SVG, no script, no network
//! resource) with the reproduce command at the top, a timeline of each node's role and term with
//! faults as bands, client operations per key as bars from invoke to return, and the violation,
//! if any, with the operations involved highlighted (`hyperion-sim run --report out.html`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use hyperion_checker::{render_operation, Operation, Outcome};

use crate::runner::Executed;
use crate::spec::{Checker, ScenarioFile};
use crate::trace::Event;

/// Width of the plotting area, pixels.
const WIDTH: f64 = 1100.0;
const LEFT: f64 = 110.0;
const ROW: f64 = 22.0;
/// Keys drawn (those of the violation first, then the busiest).
const KEYS_SHOWN_MAX: usize = 12;
/// Lanes per key for overlapping operations, and the height of one.
const LANES_MAX: usize = 8;
const LANE: f64 = 13.0;

/// `text` safe inside HTML text and attributes.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Operation ids of a finding's violation: those its excerpt stars (`* op#396 ...`), else every
/// one it names (`op#288`).
fn named_ops(text: &str) -> BTreeSet<u64> {
    let starred: String = text
        .lines()
        .filter(|line| line.trim_start().starts_with("* "))
        .collect::<Vec<_>>()
        .join("\n");
    let text = if starred.is_empty() { text } else { &starred };
    let mut ids = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("op#") {
        rest = &rest[at + 3..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(id) = digits.parse() {
            ids.insert(id);
        }
    }
    ids
}

struct Scale {
    end_ms: u64,
}

impl Scale {
    fn x(&self, ms: u64) -> f64 {
        LEFT + WIDTH * (ms.min(self.end_ms) as f64) / (self.end_ms.max(1) as f64)
    }
}

fn band(svg: &mut String, scale: &Scale, y: f64, from: u64, to: u64, class: &str, title: &str) {
    bar(svg, scale, (y, ROW - 4.0), (from, to), class, title);
}

/// A rectangle at `y` of `height`, over `[from, to]` ms, with `title` as its tooltip.
fn bar(
    svg: &mut String,
    scale: &Scale,
    (y, height): (f64, f64),
    (from, to): (u64, u64),
    class: &str,
    title: &str,
) {
    let (x0, x1) = (scale.x(from), scale.x(to));
    let _ = write!(
        svg,
        r#"<rect class="{class}" x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{height:.1}"><title>{}</title></rect>"#,
        (x1 - x0).max(1.5),
        escape(title)
    );
}

fn label(svg: &mut String, y: f64, text: &str) {
    let _ = write!(
        svg,
        r#"<text x="4" y="{:.1}">{}</text>"#,
        y + ROW - 8.0,
        escape(text)
    );
}

/// The row of `node` (under the faults row).
fn node_row(node: usize) -> f64 {
    4.0 + ROW * node as f64
}

/// `node` led `term` over `span`.
fn led(svg: &mut String, scale: &Scale, node: usize, (from, to): (u64, u64), term: u64) {
    let title = format!("node{node} leads term {term}");
    band(
        svg,
        scale,
        node_row(node),
        from,
        to,
        &format!("term{}", term % 6),
        &title,
    );
}

/// `node` was down over `span`.
fn was_down(svg: &mut String, scale: &Scale, node: usize, (from, to): (u64, u64)) {
    let title = format!("node{node} down");
    band(svg, scale, node_row(node), from, to, "down", &title);
}

/// `for N ms` in a fault's text: how long it lasts.
fn fault_duration(text: &str) -> Option<u64> {
    let at = text.find(" for ")?;
    let digits: String = text[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The HTML report of one executed run.
pub fn render(file: &ScenarioFile, executed: &Executed, reproduce: &str) -> String {
    let (met, verdict) = executed.verdict();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>hyperion-sim {} seed {}</title><style>{}</style></head><body>",
        escape(&file.path),
        executed.seed,
        STYLE
    );
    let _ = write!(
        html,
        "<h1>{} — seed {}{}</h1><pre class=\"reproduce\">{}</pre><p class=\"{}\">{}: {}</p>",
        escape(&executed.plan.name),
        executed.seed,
        executed
            .plan
            .variant
            .as_deref()
            .map_or(String::new(), |v| format!(" — variant {}", escape(v))),
        escape(reproduce),
        if met { "met" } else { "not-met" },
        if met {
            "EXPECTATION MET"
        } else {
            "EXPECTATION NOT MET"
        },
        escape(&verdict)
    );
    let report = match &executed.result {
        Ok(report) => report,
        Err(panic) => {
            let _ = write!(
                html,
                "<pre>the run panicked: {}</pre></body></html>",
                escape(panic)
            );
            return html;
        }
    };
    let findings: Vec<(Checker, &String)> = Checker::ALL
        .into_iter()
        .flat_map(|c| report.of(c).iter().map(move |f| (c, f)))
        .collect();
    let violation_ops: BTreeSet<u64> = findings.iter().flat_map(|(_, f)| named_ops(f)).collect();
    let end_ms = report
        .trace
        .iter()
        .map(|l| l.at_ms)
        .chain(report.history.iter().filter_map(|o| o.return_ms))
        .max()
        .unwrap_or(1);
    let scale = Scale { end_ms };

    // Timeline: faults, then one row per node.
    let nodes = executed.plan.nodes;
    let mut svg = String::new();
    let mut y = 4.0;
    label(&mut svg, y, "faults");
    for line in &report.trace {
        if let Event::Fault { text } = &line.event {
            let to = fault_duration(text).map_or(line.at_ms, |d| line.at_ms + d);
            band(&mut svg, &scale, y, line.at_ms, to, "fault", text);
        }
    }
    y += ROW;
    let mut leading: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    let mut down: BTreeMap<usize, u64> = BTreeMap::new();
    let mut rows = String::new();
    for line in &report.trace {
        match &line.event {
            Event::Leader { node, term } => {
                leading.insert(*node, (line.at_ms, *term));
            }
            Event::StepDown { node, .. } => {
                if let Some((from, term)) = leading.remove(node) {
                    led(&mut rows, &scale, *node, (from, line.at_ms), term);
                }
            }
            Event::NodeDown { node } => {
                down.insert(*node, line.at_ms);
            }
            Event::NodeUp { node } => {
                if let Some(from) = down.remove(node) {
                    was_down(&mut rows, &scale, *node, (from, line.at_ms));
                }
            }
            _ => {}
        }
    }
    // Clock offsets: a thin strip under each node's row, from each recorded offset to the next.
    let mut clocks: BTreeMap<usize, (u64, i64)> = BTreeMap::new();
    let strip = |svg: &mut String, node: usize, (from, to): (u64, u64), offset_ms: i64| {
        if offset_ms != 0 && to > from {
            let title = format!("node{node} clock {offset_ms:+} ms");
            let class = if offset_ms > 0 { "ahead" } else { "behind" };
            let y = node_row(node) + ROW - 5.0;
            bar(svg, &scale, (y, 3.0), (from, to), class, &title);
        }
    };
    for line in &report.trace {
        if let Event::Clock { node, offset_ms } = &line.event {
            if let Some((from, previous)) = clocks.insert(*node, (line.at_ms, *offset_ms)) {
                strip(&mut rows, *node, (from, line.at_ms), previous);
            }
        }
    }
    for (node, (from, offset_ms)) in clocks {
        strip(&mut rows, node, (from, end_ms), offset_ms);
    }
    // Still leading, or still down, when the run ended.
    for (node, (from, term)) in leading {
        led(&mut rows, &scale, node, (from, end_ms), term);
    }
    for (node, from) in down {
        was_down(&mut rows, &scale, node, (from, end_ms));
    }
    for node in 1..=nodes {
        label(&mut svg, y, &format!("node{node}"));
        y += ROW;
    }
    svg.push_str(&rows);
    let _ = write!(
        html,
        "<h2>Timeline (simulated ms; leaders coloured by term, grey: down, orange: faults; a node's clock ahead: red strip, behind: blue, its offset in the tooltip)</h2><svg width=\"{:.0}\" height=\"{:.0}\">{svg}{}</svg>",
        LEFT + WIDTH + 10.0,
        y + 20.0,
        axis(&scale, y)
    );

    // Operations per key.
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in &report.history {
        by_key.entry(op.op.key()).or_default().push(op);
    }
    let mut keys: Vec<&[u8]> = by_key.keys().copied().collect();
    keys.sort_by_key(|k| {
        let ops = &by_key[k];
        let involved = ops.iter().any(|o| violation_ops.contains(&o.id.0));
        (!involved, std::cmp::Reverse(ops.len()))
    });
    let mut svg = String::new();
    let mut y = 4.0;
    for key in keys.iter().take(KEYS_SHOWN_MAX) {
        let mut lanes: Vec<u64> = Vec::new();
        let top = y;
        for op in &by_key[key] {
            let end = op.return_ms.unwrap_or(end_ms);
            let lane = match lanes
                .iter()
                .position(|busy_until| *busy_until < op.invoke_ms)
            {
                Some(lane) => lane,
                None if lanes.len() < LANES_MAX => {
                    lanes.push(0);
                    lanes.len() - 1
                }
                None => LANES_MAX - 1,
            };
            lanes[lane] = end;
            let class = match (&op.op, &op.outcome) {
                (_, Some(Outcome::Fail)) => "op fail",
                (_, None | Some(Outcome::Unknown)) => "op unknown",
                (hyperion_checker::Op::Get { .. }, _) => "op get",
                (hyperion_checker::Op::Set { .. }, _) => "op set",
                (hyperion_checker::Op::Delete { .. }, _) => "op delete",
            };
            let involved = violation_ops.contains(&op.id.0);
            let class = if involved {
                format!("{class} violation")
            } else {
                class.to_string()
            };
            band(
                &mut svg,
                &scale,
                top + lane as f64 * (ROW - 8.0),
                op.invoke_ms,
                end,
                &class,
                &render_operation(op),
            );
        }
        label(&mut svg, top, &String::from_utf8_lossy(key));
        y = top + (lanes.len().max(1) as f64) * LANE + 8.0;
    }
    let _ = write!(
        html,
        "<h2>Client operations per key ({} of {} keys; green get, blue set, purple delete, white unknown, grey failed, red: in the violation)</h2><svg width=\"{:.0}\" height=\"{:.0}\">{svg}{}</svg>",
        keys.len().min(KEYS_SHOWN_MAX),
        keys.len(),
        LEFT + WIDTH + 10.0,
        y + 20.0,
        axis(&scale, y)
    );

    // The violation.
    if findings.is_empty() {
        html.push_str("<h2>Checkers</h2><p>No checker found anything.</p>");
    } else {
        html.push_str("<h2>Violation</h2>");
        for (checker, finding) in &findings {
            let _ = write!(
                html,
                "<div class=\"finding\"><b>[{}]</b><pre>{}</pre></div>",
                checker.name(),
                escape(finding)
            );
        }
        if !violation_ops.is_empty() {
            html.push_str(
                "<h3>Operations of the violation (starred above, red in the picture)</h3><ul class=\"involved\">",
            );
            for op in report
                .history
                .iter()
                .filter(|o| violation_ops.contains(&o.id.0))
            {
                let _ = write!(
                    html,
                    "<li data-violation-op=\"op#{}\"><code>{}</code></li>",
                    op.id.0,
                    escape(&render_operation(op))
                );
            }
            html.push_str("</ul>");
        }
    }
    html.push_str("</body></html>");
    html
}

fn axis(scale: &Scale, y: f64) -> String {
    let mut svg = String::new();
    let step = (scale.end_ms / 10).max(1);
    let mut ms = 0;
    while ms <= scale.end_ms {
        let x = scale.x(ms);
        let _ = write!(
            svg,
            r#"<line class="tick" x1="{x:.1}" y1="0" x2="{x:.1}" y2="{:.1}"/><text x="{x:.1}" y="{:.1}">{ms}</text>"#,
            y,
            y + 14.0
        );
        ms += step;
    }
    svg
}

const STYLE: &str = "body{font:13px sans-serif;margin:16px}pre{background:#f4f4f4;padding:6px;white-space:pre-wrap}\
.reproduce{font-weight:bold}.met{color:#060}.not-met{color:#a00}svg text{font:11px monospace}\
.tick{stroke:#ddd}.fault{fill:#f90;opacity:.45}.ahead{fill:#c00}.behind{fill:#06c}.down{fill:#999}\
.term0{fill:#4c72b0}.term1{fill:#55a868}.term2{fill:#c44e52}.term3{fill:#8172b2}.term4{fill:#ccb974}.term5{fill:#64b5cd}\
.op{opacity:.85}.get{fill:#5a5}.set{fill:#58c}.delete{fill:#a6c}.fail{fill:#bbb}.unknown{fill:#eee;stroke:#888}\
.violation{fill:#e33;stroke:#900;stroke-width:2;opacity:1}.finding pre{border-left:3px solid #e33}";
