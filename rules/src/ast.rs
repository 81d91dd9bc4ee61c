//! Parse: YAML documents into closed rule types, before any field mapping.
//!
//! A file may hold several YAML documents (a correlation and its base rules).
//! Each document becomes a [`Document`] or a [`RuleError`]; nothing here stops
//! at the first bad rule.

use std::fmt;

use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{Location, Reason, RuleError};

/// Sigma `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "informational" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sigma `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Stable,
    Test,
    Experimental,
    Deprecated,
    Unsupported,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "stable" => Status::Stable,
            "test" => Status::Test,
            "experimental" => Status::Experimental,
            "deprecated" => Status::Deprecated,
            "unsupported" => Status::Unsupported,
            _ => return None,
        })
    }
}

/// Sigma `logsource` (lowercased values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LogSource {
    pub product: Option<String>,
    pub category: Option<String>,
    pub service: Option<String>,
}

impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = &self.product {
            parts.push(format!("product: {p}"));
        }
        if let Some(c) = &self.category {
            parts.push(format!("category: {c}"));
        }
        if let Some(s) = &self.service {
            parts.push(format!("service: {s}"));
        }
        if parts.is_empty() {
            f.write_str("{}")
        } else {
            write!(f, "{{{}}}", parts.join(", "))
        }
    }
}

/// What every rule (detection or correlation) carries for analysts and attribution.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleMeta {
    /// Where the rule came from (see [`RuleError::rule`]).
    pub source: String,
    pub id: Option<String>,
    /// Sigma `name`, used by correlations to refer to rules.
    pub name: Option<String>,
    pub title: String,
    pub status: Option<Status>,
    pub level: Option<Level>,
    pub description: Option<String>,
    /// All tags, in rule order.
    pub tags: Vec<String>,
    pub author: Option<String>,
    pub references: Vec<String>,
    pub falsepositives: Vec<String>,
    pub logsource: LogSource,
}

impl RuleMeta {
    /// MITRE ATT&CK tags (`attack.*`).
    pub fn attack_tags(&self) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .map(String::as_str)
            .filter(|t| t.starts_with("attack."))
    }
}

/// One detection item before mapping: `field|mod1|mod2: values`, or a keyword
/// list (`field` is `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct ItemSpec {
    pub field: Option<String>,
    pub modifiers: Vec<String>,
    pub values: Vec<Yaml>,
}

/// A search identifier: OR of branches, each an AND of items.
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    pub name: String,
    pub branches: Vec<Vec<ItemSpec>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DetectionRule {
    pub meta: RuleMeta,
    pub searches: Vec<Search>,
    pub conditions: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CorrelationDoc {
    pub meta: RuleMeta,
    pub generate: bool,
    pub body: Yaml,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    Rule(DetectionRule),
    Correlation(CorrelationDoc),
}

pub(crate) fn type_name(y: &Yaml) -> &'static str {
    match y {
        Yaml::Real(_) => "a float",
        Yaml::Integer(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "nothing",
    }
}

/// Text of a scalar (strings, numbers, booleans).
pub(crate) fn scalar_text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn get<'a>(h: &'a yaml_rust2::yaml::Hash, key: &str) -> Option<&'a Yaml> {
    h.get(&Yaml::String(key.to_string()))
}

fn opt_str(h: &yaml_rust2::yaml::Hash, key: &'static str) -> Result<Option<String>, Reason> {
    match get(h, key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::String(s)) => Ok(Some(s.clone())),
        Some(y @ (Yaml::Integer(_) | Yaml::Real(_) | Yaml::Boolean(_))) => Ok(scalar_text(y)),
        Some(y) => Err(Reason::InvalidKey {
            key: key.into(),
            expected: "a string",
            found: type_name(y).into(),
        }),
    }
}

fn str_list(h: &yaml_rust2::yaml::Hash, key: &'static str) -> Result<Vec<String>, Reason> {
    match get(h, key) {
        None | Some(Yaml::Null) => Ok(Vec::new()),
        Some(Yaml::Array(a)) => a
            .iter()
            .map(|y| {
                scalar_text(y).ok_or_else(|| Reason::InvalidKey {
                    key: key.into(),
                    expected: "a list of strings",
                    found: format!("a list holding {}", type_name(y)),
                })
            })
            .collect(),
        Some(y) => scalar_text(y)
            .map(|s| vec![s])
            .ok_or_else(|| Reason::InvalidKey {
                key: key.into(),
                expected: "a list of strings",
                found: type_name(y).into(),
            }),
    }
}

/// Splits a YAML stream into documents and parses each one.
pub fn parse_file(path: &str, text: &str) -> Vec<Result<Document, RuleError>> {
    let docs = match YamlLoader::load_from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let loc = Location {
                path: path.to_string(),
                doc: None,
                id: None,
            };
            return vec![Err(RuleError::new(&loc, Reason::Yaml(e.to_string())))];
        }
    };
    let many = docs.len() > 1;
    docs.iter()
        .enumerate()
        .filter(|(_, d)| !matches!(d, Yaml::Null))
        .map(|(i, d)| {
            let mut loc = Location {
                path: path.to_string(),
                doc: many.then_some(i + 1),
                id: None,
            };
            if let Yaml::Hash(h) = d {
                loc.id = get(h, "id").and_then(scalar_text);
            }
            parse_document(&loc, d).map_err(|r| RuleError::new(&loc, r))
        })
        .collect()
}

fn parse_meta(loc: &Location, h: &yaml_rust2::yaml::Hash) -> Result<RuleMeta, Reason> {
    let title = opt_str(h, "title")?.ok_or(Reason::MissingKey("title"))?;
    let status = match opt_str(h, "status")? {
        None => None,
        Some(s) => Some(Status::parse(&s).ok_or_else(|| Reason::InvalidKey {
            key: "status".into(),
            expected: "one of stable, test, experimental, deprecated, unsupported",
            found: format!("{s:?}"),
        })?),
    };
    let level = match opt_str(h, "level")? {
        None => None,
        Some(s) => Some(Level::parse(&s).ok_or_else(|| Reason::InvalidKey {
            key: "level".into(),
            expected: "one of informational, low, medium, high, critical",
            found: format!("{s:?}"),
        })?),
    };
    let logsource = match get(h, "logsource") {
        None | Some(Yaml::Null) => LogSource::default(),
        Some(Yaml::Hash(ls)) => LogSource {
            product: opt_str(ls, "product")?.map(|s| s.to_lowercase()),
            category: opt_str(ls, "category")?.map(|s| s.to_lowercase()),
            service: opt_str(ls, "service")?.map(|s| s.to_lowercase()),
        },
        Some(y) => {
            return Err(Reason::InvalidKey {
                key: "logsource".into(),
                expected: "a mapping",
                found: type_name(y).into(),
            });
        }
    };
    Ok(RuleMeta {
        source: loc.to_string(),
        id: opt_str(h, "id")?,
        name: opt_str(h, "name")?,
        title,
        status,
        level,
        description: opt_str(h, "description")?,
        tags: str_list(h, "tags")?,
        author: opt_str(h, "author")?,
        references: str_list(h, "references")?,
        falsepositives: str_list(h, "falsepositives")?,
        logsource,
    })
}

fn parse_document(loc: &Location, doc: &Yaml) -> Result<Document, Reason> {
    let Yaml::Hash(h) = doc else {
        return Err(Reason::NotAMapping(type_name(doc)));
    };
    let meta = parse_meta(loc, h)?;
    if let Some(body) = get(h, "correlation") {
        let generate = match get(h, "generate").or_else(|| match body {
            Yaml::Hash(b) => get(b, "generate"),
            _ => None,
        }) {
            None => false,
            Some(Yaml::Boolean(b)) => *b,
            Some(y) => {
                return Err(Reason::InvalidKey {
                    key: "generate".into(),
                    expected: "a boolean",
                    found: type_name(y).into(),
                });
            }
        };
        return Ok(Document::Correlation(CorrelationDoc {
            meta,
            generate,
            body: body.clone(),
        }));
    }
    if get(h, "filter").is_some() && get(h, "detection").is_none() {
        return Err(Reason::InvalidKey {
            key: "filter".into(),
            expected: "a detection or correlation rule (sigma filters are not supported yet)",
            found: "a sigma filter document".into(),
        });
    }
    let det = match get(h, "detection") {
        None => return Err(Reason::MissingKey("detection")),
        Some(Yaml::Hash(d)) => d,
        Some(y) => {
            return Err(Reason::InvalidKey {
                key: "detection".into(),
                expected: "a mapping",
                found: type_name(y).into(),
            });
        }
    };
    let mut searches = Vec::new();
    let mut conditions = Vec::new();
    for (k, v) in det {
        let Some(name) = k.as_str() else {
            return Err(Reason::InvalidKey {
                key: format!("detection.{}", scalar_text(k).unwrap_or_default()),
                expected: "a string search identifier",
                found: type_name(k).into(),
            });
        };
        match name {
            "condition" => match v {
                Yaml::String(s) => conditions.push(s.clone()),
                Yaml::Array(a) => {
                    for c in a {
                        match c {
                            Yaml::String(s) => conditions.push(s.clone()),
                            other => {
                                return Err(Reason::InvalidKey {
                                    key: "detection.condition".into(),
                                    expected: "a string or a list of strings",
                                    found: format!("a list holding {}", type_name(other)),
                                });
                            }
                        }
                    }
                }
                other => {
                    return Err(Reason::InvalidKey {
                        key: "detection.condition".into(),
                        expected: "a string or a list of strings",
                        found: type_name(other).into(),
                    });
                }
            },
            "timeframe" => {
                return Err(Reason::InvalidKey {
                    key: "detection.timeframe".into(),
                    expected: "no timeframe (sigma 2 moved aggregations to correlation rules)",
                    found: "a timeframe".into(),
                });
            }
            _ => searches.push(parse_search(name, v)?),
        }
    }
    if conditions.is_empty() {
        return Err(Reason::MissingKey("detection.condition"));
    }
    Ok(Document::Rule(DetectionRule {
        meta,
        searches,
        conditions,
    }))
}

fn split_key(key: &str) -> (Option<String>, Vec<String>) {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default();
    let mods = parts.map(str::to_string).collect();
    let field = if field.is_empty() {
        None
    } else {
        Some(field.to_string())
    };
    (field, mods)
}

fn values_of(v: &Yaml) -> Vec<Yaml> {
    match v {
        Yaml::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn parse_map(name: &str, h: &yaml_rust2::yaml::Hash) -> Result<Vec<ItemSpec>, Reason> {
    let mut items = Vec::new();
    for (k, v) in h {
        let key = scalar_text(k).ok_or_else(|| Reason::InvalidKey {
            key: format!("detection.{name}"),
            expected: "field names as keys",
            found: type_name(k).into(),
        })?;
        let (field, modifiers) = split_key(&key);
        if let Yaml::Hash(_) = v {
            return Err(Reason::InvalidKey {
                key: format!("detection.{name}.{key}"),
                expected: "a value or a list of values",
                found: "a mapping".into(),
            });
        }
        items.push(ItemSpec {
            field,
            modifiers,
            values: values_of(v),
        });
    }
    if items.is_empty() {
        return Err(Reason::InvalidKey {
            key: format!("detection.{name}"),
            expected: "at least one field",
            found: "an empty mapping".into(),
        });
    }
    Ok(items)
}

fn parse_search(name: &str, v: &Yaml) -> Result<Search, Reason> {
    let mut branches = Vec::new();
    match v {
        Yaml::Hash(h) => branches.push(parse_map(name, h)?),
        Yaml::Array(a) => {
            let mut keywords = Vec::new();
            for item in a {
                match item {
                    Yaml::Hash(h) => branches.push(parse_map(name, h)?),
                    Yaml::Array(_) => {
                        return Err(Reason::InvalidKey {
                            key: format!("detection.{name}"),
                            expected: "a list of values or of mappings",
                            found: "a nested list".into(),
                        });
                    }
                    other => keywords.push(other.clone()),
                }
            }
            if !keywords.is_empty() {
                branches.push(vec![ItemSpec {
                    field: None,
                    modifiers: Vec::new(),
                    values: keywords,
                }]);
            }
        }
        Yaml::Null => {
            return Err(Reason::InvalidKey {
                key: format!("detection.{name}"),
                expected: "a mapping or a list",
                found: "null".into(),
            });
        }
        other => branches.push(vec![ItemSpec {
            field: None,
            modifiers: Vec::new(),
            values: vec![other.clone()],
        }]),
    }
    if branches.is_empty() {
        return Err(Reason::InvalidKey {
            key: format!("detection.{name}"),
            expected: "at least one value",
            found: "an empty list".into(),
        });
    }
    Ok(Search {
        name: name.to_string(),
        branches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_files_per_document() {
        let text = "title: a\nid: 1\nlogsource: {product: Linux}\ndetection:\n  sel:\n    Image|endswith: /x\n  condition: sel\n---\ntitle: b\n---\nnot: [a mapping\n";
        let docs = parse_file("f.yml", text);
        // A YAML syntax error fails the whole stream: the parser cannot resync.
        assert_eq!(docs.len(), 1);
        assert!(matches!(&docs[0], Err(e) if matches!(e.reason, Reason::Yaml(_))));

        let text = "title: a\nid: 1\nlevel: high\ntags: [attack.t1059, cve.2021-1]\nlogsource: {product: Linux}\ndetection:\n  sel:\n    Image|endswith: /x\n  kw: [a, b]\n  condition: sel\n---\ntitle: b\nlevel: severe\ndetection: {condition: x}\n";
        let docs = parse_file("f.yml", text);
        assert_eq!(docs.len(), 2);
        let Ok(Document::Rule(r)) = &docs[0] else {
            panic!("{docs:?}")
        };
        assert_eq!(r.meta.source, "f.yml#1 (1)");
        assert_eq!(r.meta.logsource.product.as_deref(), Some("linux"));
        assert_eq!(r.meta.attack_tags().collect::<Vec<_>>(), ["attack.t1059"]);
        assert_eq!(r.searches[0].branches[0][0].modifiers, ["endswith"]);
        assert_eq!(r.searches[1].branches[0][0].field, None);
        let Err(e) = &docs[1] else { panic!() };
        assert_eq!(e.rule, "f.yml#2");
        assert_eq!(
            e.reason.to_string(),
            "key `level` must be one of informational, low, medium, high, critical, found \"severe\""
        );
    }

    #[test]
    fn missing_parts_are_reported() {
        let e = |t: &str| match &parse_file("p", t)[0] {
            Err(e) => e.reason.to_string(),
            Ok(_) => "ok".into(),
        };
        assert_eq!(e("detection: {}"), "missing required key `title`");
        assert_eq!(e("title: x"), "missing required key `detection`");
        assert_eq!(
            e("title: x\ndetection: {s: {a: 1}}"),
            "missing required key `detection.condition`"
        );
        assert_eq!(e("- 1"), "a rule must be a yaml mapping, found a list");
        assert_eq!(
            e("title: x\ndetection: {s: {a: 1}, condition: s, timeframe: 1h}"),
            "key `detection.timeframe` must be no timeframe (sigma 2 moved aggregations to correlation rules), found a timeframe"
        );
    }
}
