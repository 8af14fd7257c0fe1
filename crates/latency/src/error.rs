//! The one error type of the latency crate: a table row it refuses, by table, line and problem.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LatencyError {
    /// A CSV table is malformed at `line` (1-based, the line the row starts on; the header is
    /// line 1).
    #[error("{table}, line {line}: {problem}")]
    Row {
        table: &'static str,
        line: usize,
        problem: String,
    },
}

impl LatencyError {
    pub(crate) fn row(table: &'static str, line: usize, problem: impl Into<String>) -> Self {
        Self::Row {
            table,
            line,
            problem: problem.into(),
        }
    }
}
