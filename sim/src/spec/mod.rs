//! Scenario files (`scenarios/*.toml`) and incident regressions (`regressions/*.toml`): the
//! format ([`format`]), its validation ([`validate`]), and drawing one seed's concrete [`Plan`]
//! ([`plan`], with the nodes' configuration in [`node`]).
//!
//! Contract:
//! - A file is data: topology, config overrides, workload, a fault timeline and expectations.
//!   A regression file is a scenario plus a `[regression]` table and `[[variant]]`s (the config
//!   before and after the fix, each with its seeds and expectations).
//! - Every scalar parameter is either a value or a range; a seed draws the concrete value
//!   (swarm testing), and the banner lists every draw.
//! - Every error names the file, the line and the field: syntax and type errors from toml's
//!   spans, semantic ones (a node number out of range, a percentage above 100) from the spans the
//!   parser keeps for every value, and a node configuration the product refuses at the field
//!   that set it.
//!
//! The format reference is in `scenarios/README.md`.

use std::fmt;
use std::path::Path;

pub mod format;
pub mod node;
pub mod plan;
pub mod validate;

pub use format::FileSpec;
pub use node::ConfigPlan;
pub use plan::{Checker, DatabasePlan, Draw, Expect, FaultPlan, FaultStep, MetricLimits, Plan};

/// Most server nodes a scenario may ask for (Raft voters; the product allows 7).
pub const NODES_MAX: u64 = 7;
/// Most workload clients a scenario may ask for (each is a simulated node).
pub const CLIENTS_MAX: u64 = 64;
/// Longest workload a scenario may ask for, in simulated ms (bounds run time and history size).
pub const DURATION_MS_MAX: u64 = 600_000;

/// An error in a scenario file: where, which field, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    /// 1-based line (0 when the error has no position).
    pub line: usize,
    /// The field's path (`faults[2].node`), or the key at that line for syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: field `{}`: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

impl std::error::Error for SpecError {}

/// A variant of a regression: its name and committed seeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantInfo {
    pub name: String,
    pub description: Option<String>,
    pub seeds: Vec<u64>,
}

/// A parsed and validated file.
#[derive(Debug, Clone)]
pub struct ScenarioFile {
    pub path: String,
    pub source: String,
    pub spec: FileSpec,
    pub variants: Vec<VariantInfo>,
}

impl ScenarioFile {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<ScenarioFile, SpecError> {
        let shown = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|error| SpecError {
            file: shown.clone(),
            line: 0,
            field: String::new(),
            message: format!("cannot read: {error}"),
        })?;
        ScenarioFile::parse(&shown, &source)
    }

    /// Parses and validates `source` (named `path` in errors).
    pub fn parse(path: &str, source: &str) -> Result<ScenarioFile, SpecError> {
        let spec: FileSpec = toml::from_str(source).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            SpecError {
                file: path.to_string(),
                line: validate::line_of(source, span.start),
                field: validate::key_at(source, span.start),
                message: error.message().trim().to_string(),
            }
        })?;
        let variants = validate::validate(&validate::Validator { path, source }, &spec)?;
        Ok(ScenarioFile {
            path: path.to_string(),
            source: source.to_string(),
            spec,
            variants,
        })
    }

    /// The scenario's name (the `name` field, else the file stem).
    pub fn name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| {
            Path::new(&self.path)
                .file_stem()
                .map_or_else(|| self.path.clone(), |s| s.to_string_lossy().into_owned())
        })
    }

    pub fn is_regression(&self) -> bool {
        self.spec.regression.is_some()
    }
}
