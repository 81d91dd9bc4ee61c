//! Compile errors are data: one [`RuleError`] per rule that could not load, so a
//! broken rule never stops the others (or ingestion).

use std::fmt;

/// Why one rule (or one YAML document) could not load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}: {reason}")]
pub struct RuleError {
    /// Where the rule came from: `path` for a single-document file, `path#N`
    /// for the N-th document (1-based) of a multi-document file, followed by
    /// ` (id)` when the rule's id is known.
    pub rule: String,
    pub reason: Reason,
}

impl RuleError {
    pub(crate) fn new(loc: &Location, reason: Reason) -> RuleError {
        RuleError {
            rule: loc.to_string(),
            reason,
        }
    }

    /// The path part of [`RuleError::rule`] (without document index or id).
    pub fn path(&self) -> &str {
        let end = self.rule.find(['#', ' ']).unwrap_or(self.rule.len());
        &self.rule[..end]
    }
}

/// Where a rule lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub path: String,
    /// 1-based document index, only when the file has several documents.
    pub doc: Option<usize>,
    pub id: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(d) = self.doc {
            write!(f, "#{d}")?;
        }
        if let Some(id) = &self.id {
            write!(f, " ({id})")?;
        }
        Ok(())
    }
}

/// The closed list of reasons a rule is rejected. Messages are lowercase and
/// say what was expected and what was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("invalid yaml: {0}")]
    Yaml(String),
    #[error("a rule must be a yaml mapping, found {0}")]
    NotAMapping(&'static str),
    #[error("missing required key `{0}`")]
    MissingKey(&'static str),
    #[error("key `{key}` must be {expected}, found {found}")]
    InvalidKey {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "unknown modifier `{modifier}` on field `{field}`; expected one of the sigma 2.1 modifiers"
    )]
    UnknownModifier { field: String, modifier: String },
    #[error("field `{field}`: {detail}")]
    InvalidValue { field: String, detail: String },
    #[error("field `{field}`: invalid regular expression: {detail}")]
    Regex { field: String, detail: String },
    #[error(
        "field `{field}`: placeholder %{placeholder}% has no value; provide it in the placeholder map"
    )]
    UnresolvedPlaceholder { field: String, placeholder: String },
    #[error(
        "field `{field}` has no vigie equivalent for logsource {logsource}; map it in the pipeline or use an ecs field path"
    )]
    UnmappedField { field: String, logsource: String },
    #[error("logsource {0} is not produced by vigie")]
    UnsupportedLogsource(String),
    #[error("condition `{condition}`: {detail}")]
    Condition { condition: String, detail: String },
    #[error("correlation: {0}")]
    Correlation(String),
    #[error("duplicate rule id {0}; ids must be unique across the rule set")]
    DuplicateId(String),
}

impl Reason {
    pub(crate) fn invalid(field: &str, detail: impl Into<String>) -> Reason {
        Reason::InvalidValue {
            field: field.to_string(),
            detail: detail.into(),
        }
    }
}
