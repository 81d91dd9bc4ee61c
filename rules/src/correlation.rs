//! Sigma 2.1 correlation rules: `event_count`, `value_count`, `temporal`,
//! `temporal_ordered`, `value_sum`, `value_avg`, `value_percentile`.
//!
//! State machines are driven by each event's own `@timestamp` (no clock): a
//! group's window is `[t - timespan, t]` where `t` is the newest event's time.
//! Conditions are checked each time an event joins a group; when a condition
//! holds, a [`CorrelationMatch`] is returned and the group starts afresh.
//! Memory is bounded per correlation ([`CorrelationLimits`]): the oldest group
//! is evicted past `max_groups`, the oldest event of a group past
//! `max_events_per_group`, and both are counted in [`CorrelationStats`].
//!
//! `value_percentile` (new in 2.1, loosely specified): the percentage of the
//! group's events in the window whose `field` has the same value as the event
//! that just arrived; `condition: {field: image, lte: 1}` fires on a value seen
//! in at most 1 % of the group's events (the spec's "rare process" example).
//! Missing group-by fields group under the empty string. Chained correlations
//! (a correlation referring to another correlation) are rejected for now.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;

use vigie_proto::event::{Event, Timestamp};
use yaml_rust2::Yaml;

use crate::ast::{CorrelationDoc, RuleMeta, get, scalar_text, type_name};
use crate::compile::{LoadOptions, RuleSet};
use crate::condition::{self, Expr};
use crate::engine::RuleMatch;
use crate::error::Reason;
use crate::field::FieldRef;

/// Bounds on correlation state (per correlation rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorrelationLimits {
    pub max_groups: NonZeroUsize,
    pub max_events_per_group: NonZeroUsize,
}

impl Default for CorrelationLimits {
    fn default() -> Self {
        CorrelationLimits {
            max_groups: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            max_events_per_group: NonZeroUsize::new(1_000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorrelationType {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
    ValueSum,
    ValueAvg,
    ValuePercentile,
}

impl CorrelationType {
    fn parse(s: &str) -> Option<CorrelationType> {
        use CorrelationType::*;
        Some(match s {
            "event_count" => EventCount,
            "value_count" => ValueCount,
            "temporal" => Temporal,
            "temporal_ordered" => TemporalOrdered,
            "value_sum" => ValueSum,
            "value_avg" => ValueAvg,
            "value_percentile" => ValuePercentile,
            _ => return None,
        })
    }
    fn needs_field(self) -> bool {
        use CorrelationType::*;
        matches!(self, ValueCount | ValueSum | ValueAvg | ValuePercentile)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

impl CmpOp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Gt => a > b,
            CmpOp::Gte => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Lte => a <= b,
            CmpOp::Eq => a == b,
            CmpOp::Neq => a != b,
        }
    }
}

/// When a correlation fires.
#[derive(Clone, Debug, PartialEq)]
pub enum CorrCondition {
    /// All comparisons hold (a range is two of them).
    Compare(Vec<(CmpOp, f64)>),
    /// `temporal` without a condition: every rule occurred.
    AllRules,
    /// `temporal` with a boolean condition over rule names.
    Expr(Expr),
}

/// A correlation rule ready to run.
#[derive(Clone, Debug)]
pub struct CompiledCorrelation {
    pub meta: Arc<RuleMeta>,
    pub ty: CorrelationType,
    /// Referenced detection rules (indices into the rule set), in order.
    pub rules: Vec<usize>,
    pub group_by: Vec<String>,
    /// `group_slots[rule position][group-by index]`: the field slot to read.
    group_slots: Vec<Vec<usize>>,
    /// The `condition.field` slot per rule position.
    value_slots: Vec<Option<usize>>,
    pub timespan_ms: i64,
    pub condition: CorrCondition,
    pub generate: bool,
}

fn parse_timespan(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let mult = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    (n > 0).then(|| n.saturating_mul(mult))
}

fn as_list(y: Option<&Yaml>, key: &str) -> Result<Vec<String>, Reason> {
    match y {
        None | Some(Yaml::Null) => Ok(Vec::new()),
        Some(Yaml::Array(a)) => a
            .iter()
            .map(|v| {
                scalar_text(v).ok_or_else(|| {
                    Reason::Correlation(format!(
                        "`{key}` must list strings, found {}",
                        type_name(v)
                    ))
                })
            })
            .collect(),
        Some(v) => scalar_text(v).map(|s| vec![s]).ok_or_else(|| {
            Reason::Correlation(format!("`{key}` must be a list, found {}", type_name(v)))
        }),
    }
}

/// Compiles a correlation against the detection rules already in `set`.
pub(crate) fn compile(
    c: &CorrelationDoc,
    set: &mut RuleSet,
    opts: &LoadOptions,
) -> Result<CompiledCorrelation, Reason> {
    let err = |m: String| Reason::Correlation(m);
    let Yaml::Hash(b) = &c.body else {
        return Err(err(format!(
            "`correlation` must be a mapping, found {}",
            type_name(&c.body)
        )));
    };
    let ty_s = get(b, "type")
        .and_then(scalar_text)
        .ok_or_else(|| err("missing `type`; expected event_count, value_count, temporal, temporal_ordered, value_sum, value_avg or value_percentile".into()))?;
    let ty = CorrelationType::parse(&ty_s).ok_or_else(|| {
        err(format!("unknown type {ty_s:?}; expected event_count, value_count, temporal, temporal_ordered, value_sum, value_avg or value_percentile"))
    })?;
    let rule_refs = as_list(get(b, "rules"), "rules")?;
    if rule_refs.is_empty() {
        return Err(err("`rules` must name at least one rule".into()));
    }
    let group_by = as_list(get(b, "group-by"), "group-by")?;
    let ts = get(b, "timespan")
        .and_then(scalar_text)
        .ok_or_else(|| err("missing `timespan`; expected a number and a unit such as 5m".into()))?;
    let timespan_ms = parse_timespan(&ts).ok_or_else(|| {
        err(format!(
            "timespan {ts:?} is invalid; expected a positive number and one of s, m, h, d, w"
        ))
    })?;

    // Resolve rules by id or name.
    let mut rules = Vec::new();
    for r in &rule_refs {
        let i = set
            .rules
            .iter()
            .position(|x| x.meta.id.as_deref() == Some(r) || x.meta.name.as_deref() == Some(r))
            .ok_or_else(|| {
                err(format!(
                    "rule `{r}` is not a loaded detection rule (unknown, rejected, or a correlation: chained correlations are not supported yet)"
                ))
            })?;
        rules.push(i);
    }

    // Aliases: alias -> rule name/id -> field.
    let mut aliases: HashMap<String, HashMap<String, String>> = HashMap::new();
    match get(b, "aliases") {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Hash(h)) => {
            for (k, v) in h {
                let alias = scalar_text(k).unwrap_or_default();
                let Yaml::Hash(m) = v else {
                    return Err(err(format!(
                        "alias `{alias}` must map rule names to fields"
                    )));
                };
                let mut per = HashMap::new();
                for (rk, rv) in m {
                    match (scalar_text(rk), scalar_text(rv)) {
                        (Some(a), Some(b)) => {
                            per.insert(a, b);
                        }
                        _ => {
                            return Err(err(format!(
                                "alias `{alias}` must map rule names to fields"
                            )));
                        }
                    }
                }
                aliases.insert(alias, per);
            }
        }
        Some(v) => {
            return Err(err(format!(
                "`aliases` must be a mapping, found {}",
                type_name(v)
            )));
        }
    }

    // Condition.
    let mut field_name: Option<String> = None;
    let condition = match get(b, "condition") {
        None | Some(Yaml::Null) => {
            if matches!(
                ty,
                CorrelationType::Temporal | CorrelationType::TemporalOrdered
            ) {
                CorrAllOr::All
            } else {
                return Err(err(format!("type {ty_s} needs a `condition`")));
            }
        }
        Some(Yaml::String(s)) => {
            if ty != CorrelationType::Temporal {
                return Err(err(format!(
                    "a boolean condition is only valid for temporal, not {ty_s}"
                )));
            }
            let names: Vec<String> = rule_refs.clone();
            let e = condition::parse(s)
                .and_then(|p| condition::resolve(&p, &names))
                .map_err(|d| err(format!("condition `{s}`: {d}")))?;
            CorrAllOr::Expr(e)
        }
        Some(Yaml::Hash(h)) => {
            let mut cmps = Vec::new();
            for (k, v) in h {
                let key = scalar_text(k).unwrap_or_default();
                if key == "field" {
                    field_name = Some(
                        scalar_text(v)
                            .ok_or_else(|| err("`condition.field` must be a field name".into()))?,
                    );
                    continue;
                }
                let op = match key.as_str() {
                    "gt" => CmpOp::Gt,
                    "gte" => CmpOp::Gte,
                    "lt" => CmpOp::Lt,
                    "lte" => CmpOp::Lte,
                    "eq" => CmpOp::Eq,
                    "neq" => CmpOp::Neq,
                    other => {
                        return Err(err(format!(
                            "condition operator `{other}` is unknown; expected gt, gte, lt, lte, eq or neq"
                        )));
                    }
                };
                let n = match v {
                    Yaml::Integer(i) => *i as f64,
                    Yaml::Real(r) => r
                        .parse()
                        .map_err(|_| err(format!("condition `{key}` needs a number")))?,
                    other => {
                        return Err(err(format!(
                            "condition `{key}` needs a number, found {}",
                            type_name(other)
                        )));
                    }
                };
                cmps.push((op, n));
            }
            if cmps.is_empty() {
                return Err(err(
                    "condition needs one of gt, gte, lt, lte, eq, neq".into()
                ));
            }
            CorrAllOr::Cmp(cmps)
        }
        Some(v) => {
            return Err(err(format!(
                "`condition` must be a mapping, found {}",
                type_name(v)
            )));
        }
    };
    if ty.needs_field() && field_name.is_none() {
        return Err(err(format!("type {ty_s} needs `condition.field`")));
    }
    if !ty.needs_field() && field_name.is_some() {
        return Err(err(format!("type {ty_s} takes no `condition.field`")));
    }
    if ty == CorrelationType::TemporalOrdered && matches!(condition, CorrAllOr::Cmp(_)) {
        return Err(err(
            "temporal_ordered takes no count condition: all rules must occur in order".into(),
        ));
    }

    // Map group-by and value fields per referenced rule.
    let mut group_slots = Vec::new();
    let mut value_slots = Vec::new();
    for (pos, &ri) in rules.iter().enumerate() {
        let rule = &set.rules[ri];
        let ls = rule.meta.logsource.clone();
        let keys: Vec<&str> = [
            Some(rule_refs[pos].as_str()),
            rule.meta.name.as_deref(),
            rule.meta.id.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let field_for = |g: &str| -> String {
            aliases
                .get(g)
                .and_then(|per| keys.iter().find_map(|k| per.get(*k)))
                .cloned()
                .unwrap_or_else(|| g.to_string())
        };
        let mut slots = Vec::new();
        for g in &group_by {
            let f = opts
                .pipeline
                .map_field(&ls, &field_for(g))
                .map_err(|e| err(format!("group-by `{g}` for rule `{}`: {e}", rule_refs[pos])))?;
            slots.push(set.fields.slot(f.field));
        }
        group_slots.push(slots);
        value_slots.push(match &field_name {
            Some(fname) => {
                let f = opts
                    .pipeline
                    .map_field(&ls, &field_for(fname))
                    .map_err(|e| {
                        err(format!(
                            "condition.field for rule `{}`: {e}",
                            rule_refs[pos]
                        ))
                    })?;
                Some(set.fields.slot(f.field))
            }
            None => None,
        });
    }

    let condition = match condition {
        CorrAllOr::All => CorrCondition::AllRules,
        CorrAllOr::Expr(e) => CorrCondition::Expr(e),
        CorrAllOr::Cmp(c) => CorrCondition::Compare(c),
    };

    // Conditions that need more events than a group may keep can never fire.
    if let CorrCondition::Compare(cmps) = &condition
        && matches!(
            ty,
            CorrelationType::EventCount | CorrelationType::ValueCount
        )
    {
        let need = cmps
            .iter()
            .filter_map(|(op, n)| match op {
                CmpOp::Gt => Some(n.floor() as i64 + 1),
                CmpOp::Gte | CmpOp::Eq => Some(n.ceil() as i64),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let cap = opts.limits.max_events_per_group.get() as i64;
        if need > cap {
            return Err(err(format!(
                "condition needs {need} events per group, more than the configured limit of {cap} (max_events_per_group)"
            )));
        }
    }
    if matches!(
        ty,
        CorrelationType::Temporal | CorrelationType::TemporalOrdered
    ) && rules.len() > opts.limits.max_events_per_group.get()
    {
        return Err(err(
            "more rules than the configured max_events_per_group".into()
        ));
    }

    Ok(CompiledCorrelation {
        meta: Arc::new(c.meta.clone()),
        ty,
        rules,
        group_by,
        group_slots,
        value_slots,
        timespan_ms,
        condition,
        generate: c.generate,
    })
}

enum CorrAllOr {
    All,
    Expr(Expr),
    Cmp(Vec<(CmpOp, f64)>),
}

/// A correlation that fired.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrelationMatch {
    /// Index in [`crate::RuleSet::correlations`].
    pub correlation: usize,
    pub meta: Arc<RuleMeta>,
    pub ty: CorrelationType,
    /// `(group-by name, value)` pairs.
    pub group: Vec<(String, String)>,
    /// The aggregate the condition tested (count, distinct count, sum, average,
    /// percentage, or number of distinct rules for temporal types).
    pub value: f64,
    /// `event.id` of every event kept in the window, oldest first.
    pub event_ids: Vec<String>,
    pub first: Timestamp,
    pub last: Timestamp,
}

/// Counters that make every dropped bit of state visible.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorrelationStats {
    /// Groups evicted because `max_groups` was reached.
    pub groups_evicted: u64,
    /// Events dropped from a group because `max_events_per_group` was reached.
    pub events_evicted: u64,
    /// Events skipped because the value field was missing or not a number.
    pub values_skipped: u64,
    pub fired: u64,
}

#[derive(Debug)]
struct Entry {
    ts: i64,
    pos: usize,
    value: Option<String>,
    num: f64,
    id: String,
}

#[derive(Debug, Default)]
struct Group {
    last_seen: i64,
    entries: VecDeque<Entry>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<Vec<String>, Group>,
    stats: CorrelationStats,
}

/// Runs the correlations of an engine's rule set. Feed it every event with the
/// engine's matches for that event, in (roughly) time order.
#[derive(Debug)]
pub struct Correlator {
    corrs: Vec<CompiledCorrelation>,
    fields: Vec<FieldRef>,
    /// Rule index → (correlation, rule position).
    by_rule: HashMap<usize, Vec<(usize, usize)>>,
    states: Vec<State>,
    limits: CorrelationLimits,
}

fn first_text(f: &FieldRef, ev: &Event) -> Option<String> {
    let mut out = None;
    f.read(ev, &mut |v| {
        if out.is_none() {
            out = Some(v.to_text().into_owned())
        }
    });
    out
}

impl Correlator {
    pub fn new(set: &RuleSet) -> Correlator {
        Correlator::with_limits(set, set.limits)
    }

    pub fn with_limits(set: &RuleSet, limits: CorrelationLimits) -> Correlator {
        let mut by_rule: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for (ci, c) in set.correlations.iter().enumerate() {
            for (pos, r) in c.rules.iter().enumerate() {
                by_rule.entry(*r).or_default().push((ci, pos));
            }
        }
        Correlator {
            corrs: set.correlations.clone(),
            fields: set.fields().to_vec(),
            by_rule,
            states: set.correlations.iter().map(|_| State::default()).collect(),
            limits,
        }
    }

    /// Counters per correlation, in rule-set order.
    pub fn stats(&self) -> Vec<CorrelationStats> {
        self.states.iter().map(|s| s.stats).collect()
    }

    /// Number of live groups per correlation.
    pub fn group_counts(&self) -> Vec<usize> {
        self.states.iter().map(|s| s.groups.len()).collect()
    }

    /// Feeds one event and the rules it matched; returns the correlations that fired.
    pub fn observe(&mut self, event: &Event, matches: &[RuleMatch]) -> Vec<CorrelationMatch> {
        let mut out = Vec::new();
        for m in matches {
            let Some(targets) = self.by_rule.get(&m.rule).cloned() else {
                continue;
            };
            for (ci, pos) in targets {
                if let Some(cm) = self.feed(ci, pos, event) {
                    out.push(cm);
                }
            }
        }
        out
    }

    fn feed(&mut self, ci: usize, pos: usize, ev: &Event) -> Option<CorrelationMatch> {
        let c = &self.corrs[ci];
        let st = &mut self.states[ci];
        let now = ev.timestamp.millis();
        let key: Vec<String> = c.group_slots[pos]
            .iter()
            .map(|s| first_text(&self.fields[*s], ev).unwrap_or_default())
            .collect();
        let (value, num) = match c.value_slots[pos] {
            None => (None, 0.0),
            Some(s) => {
                let Some(v) = first_text(&self.fields[s], ev) else {
                    st.stats.values_skipped += 1;
                    return None;
                };
                let num = if matches!(c.ty, CorrelationType::ValueSum | CorrelationType::ValueAvg) {
                    match v.trim().parse::<f64>() {
                        Ok(n) => n,
                        Err(_) => {
                            st.stats.values_skipped += 1;
                            return None;
                        }
                    }
                } else {
                    0.0
                };
                (Some(v), num)
            }
        };
        let cutoff = now.saturating_sub(c.timespan_ms);
        if !st.groups.contains_key(&key) && st.groups.len() >= self.limits.max_groups.get() {
            // Drop groups whose window has passed, then the least recently seen.
            st.groups.retain(|_, g| g.last_seen >= cutoff);
            if st.groups.len() >= self.limits.max_groups.get()
                && let Some(oldest) = st
                    .groups
                    .iter()
                    .min_by_key(|(_, g)| g.last_seen)
                    .map(|(k, _)| k.clone())
            {
                st.groups.remove(&oldest);
                st.stats.groups_evicted += 1;
            }
        }
        let g = st.groups.entry(key.clone()).or_default();
        g.last_seen = g.last_seen.max(now);
        let entry = Entry {
            ts: now,
            pos,
            value: value.clone(),
            num,
            id: ev.event.id.clone(),
        };
        let at = g.entries.partition_point(|e| e.ts <= now);
        g.entries.insert(at, entry);
        let window_start = g.last_seen.saturating_sub(c.timespan_ms);
        while g.entries.front().is_some_and(|e| e.ts < window_start) {
            g.entries.pop_front();
        }
        while g.entries.len() > self.limits.max_events_per_group.get() {
            g.entries.pop_front();
            st.stats.events_evicted += 1;
        }
        if g.entries.is_empty() {
            return None;
        }
        let n = g.entries.len() as f64;
        let (agg, fired) = match (&c.ty, &c.condition) {
            (CorrelationType::Temporal, cond) | (CorrelationType::TemporalOrdered, cond) => {
                let present: HashSet<usize> = g.entries.iter().map(|e| e.pos).collect();
                let distinct = present.len() as f64;
                let ok = match cond {
                    CorrCondition::AllRules => {
                        if c.ty == CorrelationType::TemporalOrdered {
                            let mut want = 0;
                            for e in &g.entries {
                                if e.pos == want {
                                    want += 1;
                                    if want == c.rules.len() {
                                        break;
                                    }
                                }
                            }
                            want == c.rules.len()
                        } else {
                            present.len() == c.rules.len()
                        }
                    }
                    CorrCondition::Expr(e) => e.eval(&mut |i| present.contains(&i)),
                    CorrCondition::Compare(cmps) => {
                        cmps.iter().all(|(op, v)| op.holds(distinct, *v))
                    }
                };
                (distinct, ok)
            }
            (ty, CorrCondition::Compare(cmps)) => {
                let agg = match ty {
                    CorrelationType::EventCount => n,
                    CorrelationType::ValueCount => g
                        .entries
                        .iter()
                        .filter_map(|e| e.value.as_deref())
                        .collect::<HashSet<_>>()
                        .len() as f64,
                    CorrelationType::ValueSum => g.entries.iter().map(|e| e.num).sum(),
                    CorrelationType::ValueAvg => g.entries.iter().map(|e| e.num).sum::<f64>() / n,
                    _ => {
                        let same = g.entries.iter().filter(|e| e.value == value).count() as f64;
                        same * 100.0 / n
                    }
                };
                (agg, cmps.iter().all(|(op, v)| op.holds(agg, *v)))
            }
            _ => (0.0, false),
        };
        if !fired {
            return None;
        }
        st.stats.fired += 1;
        let entries: Vec<Entry> = std::mem::take(&mut g.entries).into();
        let first = entries.first().map(|e| e.ts).unwrap_or(now);
        let last = entries.last().map(|e| e.ts).unwrap_or(now);
        Some(CorrelationMatch {
            correlation: ci,
            meta: c.meta.clone(),
            ty: c.ty,
            group: c.group_by.iter().cloned().zip(key).collect(),
            value: agg,
            event_ids: entries.into_iter().map(|e| e.id).collect(),
            first: Timestamp::from_millis(first),
            last: Timestamp::from_millis(last),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, LoadOptions, load_sources, load_sources_with};
    use vigie_proto::event::{Endpoint, Kind};

    const BASE: &str = r#"
title: failed login
id: 11111111-0000-0000-0000-000000000001
name: failed_login
level: low
logsource: {product: linux, service: sshd}
detection:
  sel: {message|contains: Failed password}
  condition: sel
---
title: accepted login
id: 11111111-0000-0000-0000-000000000002
name: ok_login
logsource: {product: linux, service: sshd}
detection:
  sel: {message|contains: Accepted}
  condition: sel
"#;

    /// (event index, group values, event ids, aggregate)
    type Fired = (usize, Vec<String>, Vec<String>, f64);

    /// (seconds, message, user, source ip, label bytes)
    type Ev<'a> = (i64, &'a str, &'a str, &'a str, &'a str);

    fn event(i: usize, e: &Ev<'_>) -> Event {
        let (t, msg, user, ip, bytes) = *e;
        let mut ev = Event::new(Kind::Authentication, Timestamp::from_secs(t));
        ev.event.id = format!("e{i}");
        ev.message = msg.into();
        ev.log.get_or_insert_with(Default::default).logger = "sshd".into();
        if !user.is_empty() {
            ev.user.get_or_insert_with(Default::default).name = user.into();
        }
        if !ip.is_empty() {
            ev.source = Some(Endpoint {
                ip: ip.parse().ok(),
                ..Default::default()
            });
            ev.destination = Some(Endpoint {
                ip: ip.parse().ok(),
                ..Default::default()
            });
        }
        if !bytes.is_empty() {
            ev.labels.insert("bytes".into(), bytes.into());
        }
        ev
    }

    /// Runs `corr` (a correlation document) over `events`; returns, for each
    /// firing, the index of the event that fired it, the group values and the ids.
    fn run_with(
        corr: &str,
        events: &[Ev<'_>],
        opts: &LoadOptions,
    ) -> (Vec<Fired>, Vec<CorrelationStats>) {
        let text = format!("{BASE}---\n{corr}");
        let (set, errors) = load_sources_with(&[("c.yml".into(), text)], opts);
        assert!(errors.is_empty(), "{errors:?}");
        let engine = Engine::new(set);
        let mut corr = Correlator::new(engine.rule_set());
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let ev = event(i, e);
            let m = engine.evaluate(&ev);
            for f in corr.observe(&ev, &m) {
                out.push((
                    i,
                    f.group.iter().map(|(_, v)| v.clone()).collect(),
                    f.event_ids,
                    f.value,
                ));
            }
        }
        (out, corr.stats())
    }

    fn run(corr: &str, events: &[Ev<'_>]) -> Vec<(usize, Vec<String>, Vec<String>)> {
        run_with(corr, events, &LoadOptions::default())
            .0
            .into_iter()
            .map(|(i, g, ids, _)| (i, g, ids))
            .collect()
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const F: &str = "Failed password for root";
    const A: &str = "Accepted password for root";

    #[test]
    fn event_count_windows_groups_and_conditions() {
        let c = "title: brute\ncorrelation: {type: event_count, rules: [failed_login], group-by: [user.name], timespan: 1m, condition: {gte: 3}}\n";
        // Three failures within a minute fire once, with the three ids.
        assert_eq!(
            run(
                c,
                &[
                    (0, F, "a", "", ""),
                    (10, F, "a", "", ""),
                    (20, F, "a", "", ""),
                    (30, F, "a", "", "")
                ]
            ),
            vec![(2, ids(&["a"]), ids(&["e0", "e1", "e2"]))]
        );
        // Window expiry: the first two are gone by t=100.
        assert_eq!(
            run(
                c,
                &[
                    (0, F, "a", "", ""),
                    (10, F, "a", "", ""),
                    (100, F, "a", "", ""),
                    (105, F, "a", "", ""),
                    (110, F, "a", "", "")
                ]
            ),
            vec![(4, ids(&["a"]), ids(&["e2", "e3", "e4"]))]
        );
        // Groups count separately; other rules do not count.
        assert_eq!(
            run(
                c,
                &[
                    (0, F, "a", "", ""),
                    (1, F, "b", "", ""),
                    (2, A, "a", "", ""),
                    (3, F, "a", "", ""),
                    (4, F, "b", "", ""),
                    (5, F, "a", "", "")
                ]
            ),
            vec![(5, ids(&["a"]), ids(&["e0", "e3", "e5"]))]
        );
        // neq (2.1) and ranges.
        let neq = "title: n\ncorrelation: {type: event_count, rules: [failed_login], group-by: [user.name], timespan: 1m, condition: {neq: 1}}\n";
        assert_eq!(
            run(neq, &[(0, F, "a", "", ""), (1, F, "a", "", "")]),
            vec![(1, ids(&["a"]), ids(&["e0", "e1"]))]
        );
        let range = "title: r\ncorrelation: {type: event_count, rules: [failed_login], group-by: [user.name], timespan: 1m, condition: {gt: 1, lte: 2}}\n";
        assert_eq!(
            run(range, &[(0, F, "a", "", ""), (1, F, "a", "", "")]),
            vec![(1, ids(&["a"]), ids(&["e0", "e1"]))]
        );
        // No group-by: one group; a missing group-by field groups under "".
        let nog = "title: g\ncorrelation: {type: event_count, rules: [failed_login, ok_login], timespan: 1m, condition: {eq: 2}}\n";
        assert_eq!(
            run(nog, &[(0, F, "a", "", ""), (1, A, "b", "", "")]),
            vec![(1, vec![], ids(&["e0", "e1"]))]
        );
        let missing = "title: m\ncorrelation: {type: event_count, rules: [failed_login], group-by: [source.ip], timespan: 1m, condition: {gte: 2}}\n";
        assert_eq!(
            run(missing, &[(0, F, "a", "", ""), (1, F, "b", "", "")]),
            vec![(1, ids(&[""]), ids(&["e0", "e1"]))]
        );
    }

    #[test]
    fn value_count_counts_distinct_values() {
        let c = "title: spray\ncorrelation: {type: value_count, rules: [failed_login], group-by: [source.ip], timespan: 5m, condition: {field: user.name, gte: 3}}\n";
        assert_eq!(
            run(
                c,
                &[
                    (0, F, "a", "10.0.0.1", ""),
                    (1, F, "a", "10.0.0.1", ""),
                    (2, F, "b", "10.0.0.1", ""),
                    (3, F, "c", "10.0.0.2", ""),
                    (4, F, "c", "10.0.0.1", "")
                ]
            ),
            vec![(4, ids(&["10.0.0.1"]), ids(&["e0", "e1", "e2", "e4"]))]
        );
    }

    #[test]
    fn temporal_and_temporal_ordered() {
        let t = "title: t\ncorrelation: {type: temporal, rules: [ok_login, failed_login], group-by: [user.name], timespan: 1m}\n";
        assert_eq!(
            run(t, &[(0, A, "a", "", ""), (30, F, "a", "", "")]),
            vec![(1, ids(&["a"]), ids(&["e0", "e1"]))]
        );
        assert_eq!(run(t, &[(0, A, "a", "", ""), (61, F, "a", "", "")]), vec![]); // window expired
        assert_eq!(run(t, &[(0, A, "a", "", ""), (1, F, "b", "", "")]), vec![]); // other group
        let expr = "title: e\ncorrelation: {type: temporal, rules: [ok_login, failed_login], group-by: [user.name], timespan: 1m, condition: 'failed_login and not ok_login'}\n";
        assert_eq!(
            run(expr, &[(0, F, "a", "", "")]),
            vec![(0, ids(&["a"]), ids(&["e0"]))]
        );
        let count = "title: c\ncorrelation: {type: temporal, rules: [ok_login, failed_login], group-by: [user.name], timespan: 1m, condition: {gte: 2}}\n";
        assert_eq!(
            run(
                count,
                &[
                    (0, F, "a", "", ""),
                    (1, F, "a", "", ""),
                    (2, A, "a", "", "")
                ]
            ),
            vec![(2, ids(&["a"]), ids(&["e0", "e1", "e2"]))]
        );
        let o = "title: o\ncorrelation: {type: temporal_ordered, rules: [failed_login, ok_login], group-by: [user.name], timespan: 1m}\n";
        assert_eq!(run(o, &[(0, A, "a", "", ""), (1, F, "a", "", "")]), vec![]);
        assert_eq!(
            run(
                o,
                &[
                    (0, A, "a", "", ""),
                    (1, F, "a", "", ""),
                    (2, A, "a", "", "")
                ]
            ),
            vec![(2, ids(&["a"]), ids(&["e0", "e1", "e2"]))]
        );
        assert_eq!(run(o, &[(0, F, "a", "", ""), (70, A, "a", "", "")]), vec![]);
    }

    #[test]
    fn aliases_unify_fields_across_rules() {
        let c = "title: a\ncorrelation:\n  type: temporal\n  rules: [failed_login, ok_login]\n  group-by: [ip]\n  timespan: 1m\n  aliases:\n    ip: {failed_login: source.ip, ok_login: destination.ip}\n";
        assert_eq!(
            run(
                c,
                &[(0, F, "a", "10.0.0.9", ""), (1, A, "b", "10.0.0.9", "")]
            ),
            vec![(1, ids(&["10.0.0.9"]), ids(&["e0", "e1"]))]
        );
        assert_eq!(
            run(
                c,
                &[(0, F, "a", "10.0.0.9", ""), (1, A, "b", "10.0.0.8", "")]
            ),
            vec![]
        );
    }

    #[test]
    fn value_sum_avg_percentile() {
        let sum = "title: s\ncorrelation: {type: value_sum, rules: [failed_login], group-by: [user.name], timespan: 1h, condition: {field: labels.bytes, gt: 1000}}\n";
        let (got, stats) = run_with(
            sum,
            &[
                (0, F, "a", "", "400"),
                (1, F, "a", "", "oops"),
                (2, F, "a", "", "400"),
                (3, F, "a", "", "400"),
            ],
            &LoadOptions::default(),
        );
        assert_eq!(
            got,
            vec![(3, ids(&["a"]), ids(&["e0", "e2", "e3"]), 1200.0)]
        );
        assert_eq!(stats[0].values_skipped, 1);
        let avg = "title: v\ncorrelation: {type: value_avg, rules: [failed_login], group-by: [user.name], timespan: 1h, condition: {field: labels.bytes, gt: 500}}\n";
        let (got, _) = run_with(
            avg,
            &[(0, F, "a", "", "400"), (1, F, "a", "", "700")],
            &LoadOptions::default(),
        );
        assert_eq!(got, vec![(1, ids(&["a"]), ids(&["e0", "e1"]), 550.0)]);
        // A user seen in at most 20 % of the failures on one address.
        let pct = "title: p\ncorrelation: {type: value_percentile, rules: [failed_login], group-by: [source.ip], timespan: 1h, condition: {field: user.name, lte: 20}}\n";
        let mut evs: Vec<Ev<'_>> = (0..9).map(|i| (i, F, "root", "10.0.0.1", "")).collect();
        evs.push((10, F, "rare", "10.0.0.1", ""));
        let (got, _) = run_with(pct, &evs, &LoadOptions::default());
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].3), (9, 10.0));
    }

    #[test]
    fn memory_is_bounded_and_evictions_counted() {
        let opts = LoadOptions {
            limits: CorrelationLimits {
                max_groups: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
                max_events_per_group: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            },
            ..LoadOptions::default()
        };
        // Never fires (gte 2 and lt 2): only state is kept.
        let c = "title: b\ncorrelation: {type: event_count, rules: [failed_login], group-by: [user.name], timespan: 1h, condition: {gte: 2, lt: 2}}\n";
        let evs = [
            (0, F, "a", "", ""),
            (1, F, "a", "", ""),
            (2, F, "a", "", ""),
            (3, F, "b", "", ""),
            (4, F, "c", "", ""),
            (5, F, "d", "", ""),
        ];
        let (got, stats) = run_with(c, &evs, &opts);
        assert!(got.is_empty());
        assert_eq!(stats[0].events_evicted, 1);
        assert_eq!(stats[0].groups_evicted, 2);
        // A threshold above the per-group limit is a load error, not a silent never-fire.
        let big = "title: big\ncorrelation: {type: event_count, rules: [failed_login], group-by: [user.name], timespan: 1h, condition: {gte: 3}}\n";
        let (_, errors) =
            load_sources_with(&[("c.yml".into(), format!("{BASE}---\n{big}"))], &opts);
        assert_eq!(
            errors[0].reason.to_string(),
            "correlation: condition needs 3 events per group, more than the configured limit of 2 (max_events_per_group)"
        );
    }

    #[test]
    fn generate_and_errors() {
        let c = "title: c\ncorrelation: {type: event_count, rules: [failed_login], group-by: [user.name], timespan: 1m, condition: {gte: 2}}\n";
        let (set, _) = load_sources(&[("c.yml".into(), format!("{BASE}---\n{c}"))]);
        assert!(!set.rules[0].standalone, "generate defaults to false");
        assert!(
            set.rules[1].standalone,
            "unreferenced rules stay standalone"
        );
        let g = "title: c\ncorrelation: {type: event_count, rules: [failed_login], group-by: [user.name], timespan: 1m, condition: {gte: 2}, generate: true}\n";
        let (set, _) = load_sources(&[("c.yml".into(), format!("{BASE}---\n{g}"))]);
        assert!(set.rules[0].standalone);
        let err = |corr: &str| {
            let (_, e) = load_sources(&[("c.yml".into(), format!("{BASE}---\n{corr}"))]);
            e.first()
                .map(|e| format!("{}: {}", e.rule, e.reason))
                .unwrap_or_default()
        };
        assert_eq!(
            err(
                "title: x\ncorrelation: {type: event_count, rules: [nope], timespan: 1m, condition: {gte: 2}}"
            ),
            "c.yml#3: correlation: rule `nope` is not a loaded detection rule (unknown, rejected, or a correlation: chained correlations are not supported yet)"
        );
        assert_eq!(
            err(
                "title: x\ncorrelation: {type: value_count, rules: [ok_login], timespan: 1m, condition: {gte: 2}}"
            ),
            "c.yml#3: correlation: type value_count needs `condition.field`"
        );
        assert_eq!(
            err(
                "title: x\ncorrelation: {type: event_count, rules: [ok_login], timespan: 1y, condition: {gte: 2}}"
            ),
            "c.yml#3: correlation: timespan \"1y\" is invalid; expected a positive number and one of s, m, h, d, w"
        );
        assert_eq!(
            err(
                "title: x\ncorrelation: {type: event_count, rules: [ok_login], timespan: 1m, condition: {above: 2}}"
            ),
            "c.yml#3: correlation: condition operator `above` is unknown; expected gt, gte, lt, lte, eq or neq"
        );
        assert_eq!(
            err("title: x\ncorrelation: {type: sequence, rules: [ok_login], timespan: 1m}"),
            "c.yml#3: correlation: unknown type \"sequence\"; expected event_count, value_count, temporal, temporal_ordered, value_sum, value_avg or value_percentile"
        );
        assert_eq!(
            err(
                "title: x\ncorrelation: {type: event_count, rules: [ok_login], group-by: [LogonId], timespan: 1m, condition: {gte: 2}}"
            ),
            "c.yml#3: correlation: group-by `LogonId` for rule `ok_login`: field `LogonId` has no vigie equivalent for logsource {product: linux, service: sshd}; map it in the pipeline or use an ecs field path"
        );
    }
}
