//! What `steeple doctor` found: one [`Check`] per line, rendered for people (✔/✘/–
//! lines and a summary) or as a JSON array, and the exit code they add up to.

use std::process::ExitCode;

use crate::doctor_check::{Check, Status};

/// Every check of one run, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// Adds one check.
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.count(Status::Fail) > 0
    }

    /// 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        if self.failed() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// One line per check (`✔`, `✘` with an indented fix, `–` for skipped), then a
    /// summary line.
    pub fn human(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        let mut out = String::new();
        for check in &self.checks {
            let (mark, detail) = match check.status {
                Status::Ok => ("✔", check.detail.clone()),
                Status::Fail => ("✘", check.detail.clone()),
                Status::Skipped => ("–", format!("skipped: {}", check.detail)),
            };
            out.push_str(&format!("{mark} {:width$}  {detail}\n", check.check));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("  {:width$}  fix: {fix}\n", ""));
            }
        }
        let failed = self.count(Status::Fail);
        out.push_str(&format!(
            "{}: {} ok, {failed} failed, {} skipped\n",
            if failed == 0 { "ready" } else { "NOT ready" },
            self.count(Status::Ok),
            self.count(Status::Skipped),
        ));
        out
    }

    /// The checks as a JSON array of `{check, status, detail, fix}` (`fix` null unless
    /// failed).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.checks).unwrap_or_else(|_| "[]".to_owned())
    }
}
