//! What every scenario hands back: a verdict, a few human lines, and one JSON
//! object with every figure and parameter (printed last, on one line).

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// The outcome of one scenario run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `fragmentation`, `chaos`, `load` or `bench`.
    pub scenario: &'static str,
    /// Whether every check held. The process exit code follows it.
    pub passed: bool,
    /// The human report, one line each.
    pub lines: Vec<String>,
    /// Every figure and parameter.
    pub json: Map<String, Value>,
    /// Checks that failed, worded for a person; also in `json["failures"]`.
    pub failures: Vec<String>,
    /// Performance bars checked: what each says, and whether it held
    /// (`None`: not measured); also in `json["bars"]`.
    pub bars: Vec<(String, Option<bool>)>,
    /// Whether a missed bar fails the verdict (`--check-targets`).
    pub bars_enforced: bool,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        let mut json = Map::new();
        json.insert("scenario".into(), Value::from(scenario));
        Report {
            scenario,
            passed: true,
            lines: Vec::new(),
            json,
            failures: Vec::new(),
            bars: Vec::new(),
            bars_enforced: false,
        }
    }

    /// Records a performance bar and whether it held. A missed bar fails
    /// the verdict only when `enforce` is set; either way the report says
    /// it was missed.
    pub fn bar(&mut self, what: impl Into<String>, held: Option<bool>, enforce: bool) {
        let what = what.into();
        self.bars_enforced |= enforce;
        if enforce && held == Some(false) {
            self.fail(format!("bar missed: {what}"));
        }
        self.bars.push((what, held));
    }

    /// Adds a line to the human report.
    pub fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// Sets a JSON figure.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_owned(), value.into());
    }

    /// Records a check: a failed one turns the verdict and is listed.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        if !ok {
            self.fail(what);
        }
        ok
    }

    /// Records a failed check.
    pub fn fail(&mut self, what: impl Into<String>) {
        self.passed = false;
        self.failures.push(what.into());
    }

    /// The JSON line, with `passed` and `failures` filled in.
    pub fn json_line(&self) -> String {
        let mut json = self.json.clone();
        json.insert("passed".into(), Value::from(self.passed));
        if !self.bars.is_empty() {
            let bars: Vec<Value> = self
                .bars
                .iter()
                .map(|(what, held)| serde_json::json!({"bar": what, "held": held}))
                .collect();
            json.insert("bars".into(), Value::from(bars));
        }
        json.insert(
            "failures".into(),
            Value::from(self.failures.iter().take(50).cloned().collect::<Vec<_>>()),
        );
        Value::Object(json).to_string()
    }

    /// The whole report as printed: human lines, failures, verdict, JSON line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        for failure in self.failures.iter().take(20) {
            out.push_str("  FAILED: ");
            out.push_str(failure);
            out.push('\n');
        }
        if self.failures.len() > 20 {
            out.push_str(&format!(
                "  ... and {} more failures\n",
                self.failures.len() - 20
            ));
        }
        for (what, held) in &self.bars {
            let verdict = match held {
                Some(true) => "held",
                Some(false) => "MISSED",
                None => "not measured",
            };
            out.push_str(&format!("  bar {what}: {verdict}\n"));
        }
        // With bars, "PASSED" would read as "every bar held"; say what it
        // means instead.
        let checks = match (self.passed, self.bars.is_empty()) {
            (true, true) => "PASSED",
            (true, false) => "runs complete and correct",
            (false, _) => "FAILED",
        };
        out.push_str(&format!("{}: {checks}", self.scenario));
        if !self.bars.is_empty() {
            let missed = self.bars.iter().filter(|(_, h)| *h == Some(false)).count();
            let held = self.bars.iter().filter(|(_, h)| *h == Some(true)).count();
            let unmeasured = self.bars.len() - held - missed;
            out.push_str(&format!(
                "; {} bars checked: {held} held, {missed} missed, {unmeasured} not measured",
                self.bars.len()
            ));
            if missed > 0 && !self.bars_enforced {
                out.push_str(
                    " (reported, not enforced: --check-targets fails the run on a missed bar)",
                );
            }
        }
        out.push('\n');
        out.push_str(&self.json_line());
        out.push('\n');
        out
    }
}

/// One figure: its JSON key, the words a person reads it by, and its value.
#[derive(Debug, Clone)]
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub value: Value,
}

impl Figure {
    pub fn new(key: &'static str, label: &'static str, value: impl Into<Value>) -> Figure {
        Figure {
            key,
            label,
            value: value.into(),
        }
    }
}

/// A scenario's figures, written once: both the human lines and the JSON
/// keys are generated from this table, so a figure can't be printed under
/// one value and reported under another, or be shown but not reported.
#[derive(Debug, Default)]
pub struct Figures {
    lines: Vec<(String, Vec<Figure>)>,
    json_only: Vec<(&'static str, Value)>,
}

impl Figures {
    pub fn new() -> Figures {
        Figures::default()
    }

    /// A human line: `lead`, then each figure as "label value",
    /// comma-separated.
    pub fn line(&mut self, lead: impl Into<String>, figures: impl IntoIterator<Item = Figure>) {
        self.lines
            .push((lead.into(), figures.into_iter().collect()));
    }

    /// A JSON key no human line shows: a parameter, or a figure only tools
    /// need.
    pub fn json_only(&mut self, key: &'static str, value: impl Into<Value>) {
        self.json_only.push((key, value.into()));
    }

    /// Adds every line and every key to `report`.
    pub fn write_to(self, report: &mut Report) {
        let (lines, json) = self.into_parts();
        for line in lines {
            report.line(line);
        }
        for (key, value) in json {
            debug_assert!(!report.json.contains_key(&key), "{key}");
            report.json.insert(key, value);
        }
    }

    /// The human lines and the JSON object, for a figure set that goes
    /// inside a larger one (one run of several).
    pub fn into_parts(self) -> (Vec<String>, Map<String, Value>) {
        let mut lines = Vec::new();
        let mut json = Map::new();
        for (lead, figures) in self.lines {
            let shown: Vec<String> = figures
                .iter()
                .map(|f| format!("{} {}", f.label, human(&f.value)))
                .collect();
            lines.push(format!("{lead}{}", shown.join(", ")));
            for figure in figures {
                debug_assert!(!json.contains_key(figure.key), "{}", figure.key);
                json.insert(figure.key.to_owned(), figure.value);
            }
        }
        for (key, value) in self.json_only {
            debug_assert!(!json.contains_key(key), "{key}");
            json.insert(key.to_owned(), value);
        }
        (lines, json)
    }
}

/// A JSON value as a person reads it: yes/no for a flag, a tally as
/// "(key n, key n)" in key order.
fn human(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(human).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let mut items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k} {}", human(v)))
                .collect();
            items.sort();
            format!("({})", items.join(", "))
        }
    }
}

/// Prints a progress line to stderr at most every few seconds, so a long run
/// shows it is alive without flooding the report on stdout.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    every: Duration,
    last: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(label: &'static str, quiet: bool) -> Progress {
        Progress {
            label,
            every: Duration::from_secs(2),
            last: Instant::now(),
            quiet,
        }
    }

    /// Prints `line()` if the interval has passed.
    pub fn tick(&mut self, line: impl FnOnce() -> String) {
        if self.quiet || self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[{}] {}", self.label, line());
    }

    /// Prints a line now.
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "[{}] {}", self.label, line.as_ref());
        }
    }
}

/// Rounds to `digits` decimals for the report.
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn figures_make_both_the_lines_and_the_keys() {
        let mut figures = Figures::new();
        figures.line(
            "  after: ",
            [
                Figure::new("final_rooms", "rooms", 0),
                Figure::new("still_serves", "still serves", true),
                Figure::new("errors", "errors", json!({"b": 2, "a": 1})),
            ],
        );
        figures.line("", [Figure::new("empty", "nothing", json!({}))]);
        figures.json_only("seed", 7);
        let mut report = Report::new("test");
        figures.write_to(&mut report);
        assert_eq!(
            report.lines,
            [
                "  after: rooms 0, still serves yes, errors (a 1, b 2)",
                "nothing ()"
            ]
        );
        assert_eq!(report.json["final_rooms"], 0);
        assert_eq!(report.json["still_serves"], true);
        assert_eq!(report.json["errors"], json!({"a": 1, "b": 2}));
        assert_eq!(report.json["seed"], 7);
        assert_eq!(report.json.len(), 6, "{:?}", report.json);
    }

    #[test]
    fn bars_are_listed_and_fail_the_verdict_only_when_enforced() {
        let mut report = Report::new("bench");
        report.bar("fan-out ≥ 5 M/s: 3 M/s", Some(false), false);
        report.bar("p50 ≤ 150 µs: 90 µs", Some(true), false);
        report.bar("KiB per connection ≤ 24", None, false);
        assert!(report.passed);
        let text = report.render();
        assert!(
            text.contains("  bar fan-out ≥ 5 M/s: 3 M/s: MISSED\n"),
            "{text}"
        );
        assert!(text.contains("  bar p50 ≤ 150 µs: 90 µs: held\n"), "{text}");
        assert!(
            text.contains(
                "bench: runs complete and correct; 3 bars checked: 1 held, 1 missed, 1 not measured (reported, not enforced: --check-targets fails the run on a missed bar)"
            ),
            "{text}"
        );
        assert!(!text.contains("PASSED"), "{text}");
        assert!(report.json_line().contains("\"held\":false"));
        report.bar("another", Some(false), true);
        assert!(!report.passed);
        assert_eq!(report.failures, ["bar missed: another"]);
        let text = report.render();
        assert!(
            text.contains("bench: FAILED; 4 bars checked: 1 held, 2 missed, 1 not measured\n"),
            "{text}"
        );
    }
}
