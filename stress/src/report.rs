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
        }
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
        out.push_str(&format!(
            "{}: {}\n",
            self.scenario,
            if self.passed { "PASSED" } else { "FAILED" }
        ));
        out.push_str(&self.json_line());
        out.push('\n');
        out
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
