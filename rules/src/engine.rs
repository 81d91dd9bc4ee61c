//! Evaluation: rules indexed by event kind, behind a global Aho-Corasick
//! prefilter over the literals each rule cannot match without.
//!
//! For every rule the compiler derives a *requirement*: a set of
//! `(field, literal)` pairs such that, if the rule matches an event, at least
//! one literal occurs in the (lowercased) field. One automaton per field scans
//! each event once; a rule with a requirement whose literals did not occur is
//! skipped. The prefilter only ever skips rules that cannot match, so results
//! are identical with it on or off (a test checks it on the whole corpus).

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use vigie_proto::event::{Event, Kind};

use crate::ast::{Level, RuleMeta};
use crate::compile::{CompiledRule, RuleSet, Selection};
use crate::condition::Expr;
use crate::matcher::{ItemMatcher, Scratch, StrPat, ValueMatcher};

/// One rule matching one event.
#[derive(Clone, Debug)]
pub struct RuleMatch {
    /// Index of the rule in [`Engine::rules`].
    pub rule: usize,
    pub meta: Arc<RuleMeta>,
    /// False when the rule only feeds correlations (`generate: false`): do not
    /// raise an alert for it alone.
    pub standalone: bool,
}

impl RuleMatch {
    pub fn id(&self) -> Option<&str> {
        self.meta.id.as_deref()
    }
    pub fn title(&self) -> &str {
        &self.meta.title
    }
    pub fn level(&self) -> Option<Level> {
        self.meta.level
    }
    pub fn tags(&self) -> &[String] {
        &self.meta.tags
    }
}

/// `(slot, lowercased literal)` alternatives: at least one must occur.
type Requirement = Vec<(usize, String)>;

fn better(a: Option<Requirement>, b: Option<Requirement>) -> Option<Requirement> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => {
            let minlen = |r: &Requirement| r.iter().map(|(_, l)| l.len()).min().unwrap_or(0);
            let key = |r: &Requirement| (r.len(), std::cmp::Reverse(minlen(r)));
            Some(if key(&b) < key(&a) { b } else { a })
        }
    }
}

fn union(reqs: impl IntoIterator<Item = Option<Requirement>>) -> Option<Requirement> {
    let mut out = Vec::new();
    for r in reqs {
        out.extend(r?);
    }
    out.sort();
    out.dedup();
    (!out.is_empty()).then_some(out)
}

fn value_req(slot: usize, v: &ValueMatcher) -> Option<Requirement> {
    let ValueMatcher::Str { pat, cased } = v else {
        return None;
    };
    if matches!(pat, StrPat::Any) {
        return None;
    }
    let lit = pat
        .literals()
        .into_iter()
        .filter(|l| l.is_ascii() && !l.is_empty())
        .max_by_key(|l| l.len())?;
    let lit = if *cased {
        lit.to_ascii_lowercase()
    } else {
        lit.to_string()
    };
    Some(vec![(slot, lit)])
}

fn item_req(item: &crate::matcher::Item) -> Option<Requirement> {
    match &item.matcher {
        ItemMatcher::Values {
            values,
            all,
            negate: false,
        } => {
            if *all {
                values
                    .iter()
                    .map(|v| value_req(item.slot, v))
                    .fold(None, better)
            } else {
                union(values.iter().map(|v| value_req(item.slot, v)))
            }
        }
        _ => None,
    }
}

fn selection_req(s: &Selection) -> Option<Requirement> {
    union(
        s.branches
            .iter()
            .map(|b| b.iter().map(item_req).fold(None, better)),
    )
}

fn expr_req(e: &Expr, sels: &[Option<Requirement>]) -> Option<Requirement> {
    match e {
        Expr::Sel(i) => sels[*i].clone(),
        Expr::Not(_) => None,
        Expr::And(v) => v.iter().map(|x| expr_req(x, sels)).fold(None, better),
        Expr::Or(v) => union(v.iter().map(|x| expr_req(x, sels))),
        Expr::AtLeast(_, ids) => union(ids.iter().map(|i| sels[*i].clone())),
    }
}

/// The literals a rule cannot match without (`None`: no such literal).
fn rule_req(r: &CompiledRule) -> Option<Requirement> {
    let sels: Vec<Option<Requirement>> = r.selections.iter().map(selection_req).collect();
    union(r.conditions.iter().map(|c| expr_req(c, &sels)))
}

#[derive(Debug)]
struct SlotAutomaton {
    slot: usize,
    ac: AhoCorasick,
    /// Pattern index → rules that need it.
    rules: Vec<Vec<u32>>,
}

/// The detection engine: immutable, shareable across threads.
#[derive(Debug)]
pub struct Engine {
    set: RuleSet,
    by_kind: Vec<Vec<u32>>,
    automata: Vec<SlotAutomaton>,
    /// Rules the prefilter may skip.
    filtered: Vec<bool>,
    prefilter: bool,
}

impl Engine {
    pub fn new(set: RuleSet) -> Engine {
        let mut by_kind = vec![Vec::new(); Kind::ALL.len()];
        for (i, r) in set.rules.iter().enumerate() {
            for k in &r.route.kinds {
                by_kind[k.code() as usize].push(i as u32);
            }
        }
        let mut per_slot: std::collections::BTreeMap<
            usize,
            std::collections::BTreeMap<String, Vec<u32>>,
        > = Default::default();
        let mut filtered = vec![false; set.rules.len()];
        for (i, r) in set.rules.iter().enumerate() {
            if let Some(req) = rule_req(r) {
                filtered[i] = true;
                for (slot, lit) in req {
                    per_slot
                        .entry(slot)
                        .or_default()
                        .entry(lit)
                        .or_default()
                        .push(i as u32);
                }
            }
        }
        let mut automata = Vec::new();
        for (slot, lits) in per_slot {
            let (pats, rules): (Vec<String>, Vec<Vec<u32>>) = lits.into_iter().unzip();
            match AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&pats)
            {
                Ok(ac) => automata.push(SlotAutomaton { slot, ac, rules }),
                Err(_) => {
                    // Too large an automaton: evaluate these rules unfiltered.
                    for r in rules.into_iter().flatten() {
                        filtered[r as usize] = false;
                    }
                }
            }
        }
        Engine {
            set,
            by_kind,
            automata,
            filtered,
            prefilter: true,
        }
    }

    /// Turns the prefilter on or off (results are the same; for tests and benches).
    pub fn with_prefilter(mut self, on: bool) -> Engine {
        self.prefilter = on;
        self
    }

    pub fn rules(&self) -> &[CompiledRule] {
        &self.set.rules
    }

    pub fn rule_set(&self) -> &RuleSet {
        &self.set
    }

    /// How many rules the prefilter can skip.
    pub fn prefiltered_rules(&self) -> usize {
        self.filtered.iter().filter(|f| **f).count()
    }

    /// The rules that match `event`.
    pub fn evaluate(&self, event: &Event) -> Vec<RuleMatch> {
        let mut sc = Scratch::default();
        let mut out = Vec::new();
        self.evaluate_with(event, &mut sc, &mut out);
        out
    }

    /// [`Engine::evaluate`] reusing a scratch buffer; matches are appended to `out`.
    pub fn evaluate_with(&self, event: &Event, sc: &mut Scratch, out: &mut Vec<RuleMatch>) {
        let fields = self.set.fields();
        sc.begin(fields.len());
        let use_pf = self.prefilter && !self.automata.is_empty();
        if use_pf {
            let words = self.set.rules.len().div_ceil(64);
            sc.cand.clear();
            sc.cand.resize(words, 0);
            for a in &self.automata {
                sc.fill(a.slot, &fields[a.slot], event);
                let (lowered, cand) = sc.lowered_and_cand(a.slot);
                for text in lowered {
                    for m in a.ac.find_overlapping_iter(text.as_str()) {
                        for r in &a.rules[m.pattern().as_usize()] {
                            cand[(*r / 64) as usize] |= 1 << (r % 64);
                        }
                    }
                }
            }
        }
        let logger_slots = (0, 1);
        for &r in &self.by_kind[event.event.kind.code() as usize] {
            let ri = r as usize;
            if use_pf && self.filtered[ri] && sc.cand[ri / 64] & (1 << (ri % 64)) == 0 {
                continue;
            }
            let rule = &self.set.rules[ri];
            if rule.applies_to(event, sc, fields, logger_slots) && rule.eval(event, fields, sc) {
                out.push(RuleMatch {
                    rule: ri,
                    meta: rule.meta.clone(),
                    standalone: rule.standalone,
                });
            }
        }
    }
}
