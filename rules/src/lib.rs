//! Vigie's own Sigma 2.1 engine: parse → validate/resolve (field mapping and
//! logsource routing through a pySigma-style pipeline) → compile into
//! field-indexed matchers behind an Aho-Corasick prefilter → evaluate events;
//! plus correlation state machines.
//!
//! Owns: rule semantics (modifiers, conditions, correlations), the mapping from
//! Sigma's Linux taxonomy to Vigie's ECS fields (`mappings/vigie-linux.yml`,
//! rendered in `FIELDS.md`), and per-rule compile errors as data.
//!
//! Never does: IO (callers hand in `(path, text)` pairs, see [`load_sources`]),
//! clock reads (correlation time is each event's `@timestamp`), threads or task
//! spawning; never links tokio, quinn or RocksDB (checked by
//! `scripts/layering.sh`). A broken rule never stops the others: it becomes a
//! [`RuleError`].
//!
//! ```
//! use vigie_rules::{load_sources, Engine};
//! use vigie_proto::event::{Event, Kind, Timestamp};
//!
//! let rule = "title: Netcat listener\nid: 1\nlogsource: {product: linux, category: process_creation}\n\
//!             detection:\n  sel:\n    Image|endswith: /nc\n    CommandLine|contains: ' -l'\n  condition: sel\n";
//! let (set, errors) = load_sources(&[("nc.yml".into(), rule.into())]);
//! assert!(errors.is_empty());
//! let engine = Engine::new(set);
//! let mut ev = Event::new(Kind::ProcessExec, Timestamp::from_secs(1));
//! let p = ev.process.get_or_insert_with(Default::default);
//! p.executable = "/usr/bin/nc".into();
//! p.command_line = "nc -lvp 4444".into();
//! assert_eq!(engine.evaluate(&ev)[0].title(), "Netcat listener");
//! ```

pub mod ast;
pub mod compile;
pub mod condition;
pub mod correlation;
pub mod engine;
pub mod error;
pub mod field;
pub mod matcher;
pub mod pipeline;
pub mod synth;

pub use ast::{Level, LogSource, RuleMeta, Status};
pub use compile::{CompiledRule, LoadOptions, RuleSet, load_sources, load_sources_with};
pub use correlation::{
    CorrelationLimits, CorrelationMatch, CorrelationStats, CorrelationType, Correlator,
};
pub use engine::{Engine, RuleMatch};
pub use error::{Reason, RuleError};
pub use matcher::Scratch;
pub use pipeline::Pipeline;
