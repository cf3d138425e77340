//! Metric rows: maps from column name to value, written in a declared column order.
//!
//! A training loop declares its columns once ([`Columns`]); a learner, a hook (the preference
//! loop, a reward transform) or a wrapper adds its own before the first row. Every row is a
//! [`MetricRow`], filled by name; writing a row with a column that was never declared is an
//! error (a typo must not vanish into an unread column), and a declared column a row leaves
//! unset is written empty. Timing columns (`SPS`, `wall_seconds`) are declared last by
//! convention, so every column before them is a function of config and seed.

use std::fmt;

/// One cell. Floats are written with Rust's shortest round-trip formatting, so a value read
/// back is the value written.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Int(u64),
    Float(f64),
    /// A float written with a fixed number of decimals (timing columns).
    Fixed {
        value: f64,
        decimals: usize,
    },
    /// Nothing to report this row (no episode finished, say).
    Missing,
}

impl Cell {
    /// `Float(x)` or `Missing`.
    pub fn opt(x: Option<f64>) -> Self {
        x.map_or(Cell::Missing, Cell::Float)
    }
    /// The value as a float, if there is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Cell::Int(v) => Some(v as f64),
            Cell::Float(v) | Cell::Fixed { value: v, .. } => Some(v),
            Cell::Missing => None,
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Int(v) => write!(f, "{v}"),
            Cell::Float(v) => write!(f, "{v}"),
            Cell::Fixed { value, decimals } => write!(f, "{value:.decimals$}"),
            Cell::Missing => Ok(()),
        }
    }
}

impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Cell::Int(v)
    }
}

impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Cell::Int(v as u64)
    }
}

impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Float(v)
    }
}

impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        Cell::opt(v)
    }
}

/// The ordered column names of a metrics table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Columns(Vec<String>);

impl Columns {
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut c = Columns::default();
        c.extend(names);
        c
    }
    /// Appends `names`. A name declared twice would make two columns with one meaning, so it
    /// panics: that is a programming error, not bad input.
    pub fn extend<S: AsRef<str>>(&mut self, names: impl IntoIterator<Item = S>) {
        for name in names {
            let name = name.as_ref();
            assert!(
                !self.contains(name),
                "metric column `{name}` is declared twice"
            );
            assert!(
                !name.is_empty() && !name.contains([',', '"', '\n', '\r']),
                "metric column `{name}` is not a plain CSV header"
            );
            self.0.push(name.to_string());
        }
    }
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|c| c == name)
    }
    pub fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|c| c == name)
    }
    pub fn names(&self) -> &[String] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The CSV header line (no newline).
    pub fn header(&self) -> String {
        self.0.join(",")
    }
    /// `row` as one CSV line (no newline), in this column order.
    pub fn line(&self, row: &MetricRow) -> Result<String, UndeclaredColumn> {
        if let Some((name, _)) = row.cells.iter().find(|(n, _)| !self.contains(n)) {
            return Err(UndeclaredColumn { name: name.clone() });
        }
        Ok(self
            .0
            .iter()
            .map(|c| row.get(c).map(Cell::to_string).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(","))
    }
}

/// A row named a column that the table did not declare.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("metric column `{name}` was not declared before the first row")]
pub struct UndeclaredColumn {
    pub name: String,
}

/// One row of metrics, by column name (insertion order kept; setting a name again replaces it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricRow {
    cells: Vec<(String, Cell)>,
}

impl MetricRow {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Cell>) -> &mut Self {
        let name = name.into();
        let value = value.into();
        match self.cells.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.cells.push((name, value)),
        }
        self
    }
    pub fn get(&self, name: &str) -> Option<&Cell> {
        self.cells.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
    /// The value of `name` as a float (`None` when unset or missing).
    pub fn f64(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(Cell::as_f64)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Cell)> {
        self.cells.iter().map(|(n, c)| (n.as_str(), c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_written_in_declared_order_with_gaps_empty() {
        let cols = Columns::new(["iteration", "episodic_return", "loss", "SPS"]);
        let mut row = MetricRow::new();
        row.set("loss", 0.25).set("iteration", 3u64).set(
            "SPS",
            Cell::Fixed {
                value: 1234.56,
                decimals: 0,
            },
        );
        assert_eq!(cols.header(), "iteration,episodic_return,loss,SPS");
        assert_eq!(cols.line(&row).unwrap(), "3,,0.25,1235");
        row.set("loss", 0.5);
        assert_eq!(row.f64("loss"), Some(0.5));
        assert_eq!(row.f64("episodic_return"), None);
    }

    #[test]
    fn an_undeclared_column_is_an_error_naming_it() {
        let cols = Columns::new(["iteration"]);
        let mut row = MetricRow::new();
        row.set("iteratoin", 1u64);
        assert_eq!(
            cols.line(&row).unwrap_err().to_string(),
            "metric column `iteratoin` was not declared before the first row"
        );
    }

    #[test]
    #[should_panic(expected = "declared twice")]
    fn a_column_declared_twice_panics() {
        Columns::new(["a", "b", "a"]);
    }

    #[test]
    fn floats_round_trip() {
        for x in [0.1, 1e-300, -3.25e17, 0.30000000000000004] {
            let s = Cell::Float(x).to_string();
            assert_eq!(s.parse::<f64>().unwrap(), x);
        }
    }
}
