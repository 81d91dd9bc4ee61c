//! Example events for a compiled rule: one that should match (built through the
//! field mapping from the rule's own values), and one with a required value
//! changed that should not. `vigie rules check` can use it to flag rules that
//! can never fire; the corpus test and the benchmark use it to make events.
//!
//! The generator walks the rule's condition: it picks a branch that makes the
//! condition true, derives a value for each field from the matchers (literal
//! pieces of wildcard patterns, a sample string for a regular expression, a
//! number for comparisons, a host of a CIDR network, a date for time
//! modifiers), merges the pieces of one field, and keeps negated selections
//! false by leaving their fields unset or checking that they stay false.

use vigie_proto::event::{Event, Kind, Timestamp};

use crate::compile::CompiledRule;
use crate::condition::Expr;
use crate::field::{FieldRef, FieldType, Known};
use crate::matcher::{ItemMatcher, NumOp, Position, Scratch, StrPat, TimePart, Tok, ValueMatcher};

/// A matching event and its near miss.
#[derive(Clone, Debug)]
pub struct Example {
    pub matching: Event,
    pub mutated: Event,
    /// The field whose value was changed in `mutated`.
    pub mutated_field: String,
}

#[derive(Clone, Debug)]
enum Piece {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Mid(String),
}

/// One choice of what to set and what must stay false.
#[derive(Clone, Debug, Default)]
struct Plan {
    /// (slot, pieces, item index for mutation checks)
    musts: Vec<(usize, Vec<Piece>)>,
    absent: Vec<usize>,
    avoid: Vec<usize>,
}

impl Plan {
    fn merge(mut self, o: &Plan) -> Plan {
        self.musts.extend(o.musts.iter().cloned());
        self.absent.extend(o.absent.iter().copied());
        self.avoid.extend(o.avoid.iter().copied());
        self
    }
}

const MAX_ALTS: usize = 24;

fn product(a: Vec<Plan>, b: Vec<Plan>) -> Vec<Plan> {
    let mut out = Vec::new();
    for x in &a {
        for y in &b {
            out.push(x.clone().merge(y));
            if out.len() >= MAX_ALTS {
                return out;
            }
        }
    }
    out
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn regex_sample(pat: &str) -> Option<String> {
    use regex_syntax::hir::{Class, Hir, HirKind};
    fn pick(ok: &dyn Fn(char) -> bool, first: Option<char>) -> Option<char> {
        ['a', 'x', '0', ' ', '-', '/', '.']
            .into_iter()
            .find(|c| ok(*c))
            .or(first)
    }
    fn go(h: &Hir, out: &mut String) -> Option<()> {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(l) => out.push_str(std::str::from_utf8(&l.0).ok()?),
            HirKind::Class(Class::Unicode(c)) => {
                let first = c.ranges().first().map(|r| r.start());
                let ok = |ch: char| c.ranges().iter().any(|r| r.start() <= ch && ch <= r.end());
                out.push(pick(&ok, first)?);
            }
            HirKind::Class(Class::Bytes(c)) => {
                let first = c.ranges().first().map(|r| char::from(r.start()));
                let ok = |ch: char| {
                    ch.is_ascii()
                        && c.ranges()
                            .iter()
                            .any(|r| r.start() <= ch as u8 && ch as u8 <= r.end())
                };
                out.push(pick(&ok, first)?);
            }
            HirKind::Repetition(r) => {
                for _ in 0..r.min {
                    go(&r.sub, out)?;
                }
            }
            HirKind::Capture(c) => go(&c.sub, out)?,
            HirKind::Concat(v) => {
                for x in v {
                    go(x, out)?;
                }
            }
            HirKind::Alternation(v) => go(v.first()?, out)?,
        }
        Some(())
    }
    let hir = regex_syntax::Parser::new().parse(pat).ok()?;
    let mut out = String::new();
    go(&hir, &mut out)?;
    Some(out)
}

fn render(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match t {
            Tok::Lit(l) => l.as_str(),
            Tok::Star => "",
            Tok::One => "x",
            Tok::Dash => "-",
        })
        .collect()
}

fn time_sample(part: TimePart, op: NumOp, value: i64) -> Option<String> {
    use chrono::{NaiveDate, NaiveTime};
    let v = match op {
        NumOp::Lt => value - 1,
        NumOp::Gt => value + 1,
        _ => value,
    };
    let (mut y, mut mo, mut d, mut h, mut mi) = (2024, 6, 12, 12, 30);
    let date = match part {
        TimePart::Week => {
            NaiveDate::from_isoywd_opt(2024, u32::try_from(v).ok()?, chrono::Weekday::Wed)?
        }
        _ => {
            match part {
                TimePart::Minute => mi = u32::try_from(v).ok()?,
                TimePart::Hour => h = u32::try_from(v).ok()?,
                TimePart::Day => d = u32::try_from(v).ok()?,
                TimePart::Month => mo = u32::try_from(v).ok()?,
                TimePart::Year => y = i32::try_from(v).ok()?,
                TimePart::Week => {}
            }
            NaiveDate::from_ymd_opt(y, mo, d)?
        }
    };
    let t = NaiveTime::from_hms_opt(h, mi, 0)?;
    Some(date.and_time(t).and_utc().timestamp_millis().to_string())
}

fn value_piece(v: &ValueMatcher) -> Option<Piece> {
    Some(match v {
        ValueMatcher::Str { pat, .. } => match pat {
            StrPat::Exact(a) => Piece::Exact(a.clone()),
            StrPat::Prefix(a) => Piece::Prefix(a.clone()),
            StrPat::Suffix(a) => Piece::Suffix(a.clone()),
            StrPat::Contains(a) => Piece::Mid(a.clone()),
            StrPat::Any => Piece::Mid("x".into()),
            StrPat::Glob(t) => {
                let s = render(t);
                match (t.first() == Some(&Tok::Star), t.last() == Some(&Tok::Star)) {
                    (true, true) => Piece::Mid(s),
                    (true, false) => Piece::Suffix(s),
                    (false, true) => Piece::Prefix(s),
                    (false, false) => Piece::Exact(s),
                }
            }
        },
        ValueMatcher::Empty => return None,
        ValueMatcher::Regex(r) => Piece::Mid(regex_sample(r.as_str())?),
        ValueMatcher::Num { op, value } => Piece::Exact(fmt_num(match op {
            NumOp::Lt => value - 1.0,
            NumOp::Gt => value + 1.0,
            _ => *value,
        })),
        ValueMatcher::Cidr(c) => Piece::Exact(match c.net {
            std::net::IpAddr::V4(n) => {
                let host = if c.prefix >= 31 {
                    u32::from(n)
                } else {
                    u32::from(n) | 1
                };
                std::net::Ipv4Addr::from(host).to_string()
            }
            std::net::IpAddr::V6(n) => {
                let host = if c.prefix >= 127 {
                    u128::from(n)
                } else {
                    u128::from(n) | 1
                };
                std::net::Ipv6Addr::from(host).to_string()
            }
        }),
        ValueMatcher::Time { part, op, value } => Piece::Exact(time_sample(*part, *op, *value)?),
    })
}

struct Gen<'a> {
    rule: &'a CompiledRule,
}

impl Gen<'_> {
    fn sel_true(&self, i: usize) -> Vec<Plan> {
        let mut out = Vec::new();
        for branch in &self.rule.selections[i].branches {
            let mut alts = vec![Plan::default()];
            let mut ok = true;
            for item in branch {
                let choices: Vec<Plan> = match &item.matcher {
                    ItemMatcher::Exists(true) => vec![Plan {
                        musts: vec![(item.slot, vec![Piece::Mid("1".into())])],
                        ..Plan::default()
                    }],
                    ItemMatcher::Exists(false) => vec![Plan {
                        absent: vec![item.slot],
                        ..Plan::default()
                    }],
                    ItemMatcher::FieldRef { others, pos, .. } => {
                        let mut p = Plan::default();
                        let v = "vigie-ref".to_string();
                        let mine = match pos {
                            Position::Exact => Piece::Exact(v.clone()),
                            Position::Prefix => Piece::Prefix(v.clone()),
                            Position::Suffix => Piece::Suffix(v.clone()),
                            Position::Contains => Piece::Mid(v.clone()),
                        };
                        p.musts.push((item.slot, vec![mine]));
                        for o in others {
                            p.musts.push((*o, vec![Piece::Exact(v.clone())]));
                        }
                        vec![p]
                    }
                    ItemMatcher::Values { negate: true, .. } => vec![Plan {
                        musts: vec![(item.slot, vec![Piece::Exact("vigie-other".into())])],
                        ..Plan::default()
                    }],
                    ItemMatcher::Values { values, all, .. } => {
                        if *all {
                            let pieces: Option<Vec<Piece>> =
                                values.iter().map(value_piece).collect();
                            match pieces {
                                Some(p) => vec![Plan {
                                    musts: vec![(item.slot, p)],
                                    ..Plan::default()
                                }],
                                None => vec![Plan {
                                    absent: vec![item.slot],
                                    ..Plan::default()
                                }],
                            }
                        } else {
                            values
                                .iter()
                                .take(4)
                                .map(|v| match value_piece(v) {
                                    Some(p) => Plan {
                                        musts: vec![(item.slot, vec![p])],
                                        ..Plan::default()
                                    },
                                    None => Plan {
                                        absent: vec![item.slot],
                                        ..Plan::default()
                                    },
                                })
                                .collect()
                        }
                    }
                };
                if choices.is_empty() {
                    ok = false;
                    break;
                }
                alts = product(alts, choices);
            }
            if ok {
                out.extend(alts);
            }
            if out.len() >= MAX_ALTS {
                break;
            }
        }
        out
    }

    fn alts(&self, e: &Expr, want: bool) -> Vec<Plan> {
        let mut out: Vec<Plan> = match (e, want) {
            (Expr::Sel(i), true) => self.sel_true(*i),
            (Expr::Sel(i), false) => vec![Plan {
                avoid: vec![*i],
                ..Plan::default()
            }],
            (Expr::Not(x), w) => self.alts(x, !w),
            (Expr::And(v), true) | (Expr::Or(v), false) => {
                let mut acc = vec![Plan::default()];
                for x in v {
                    acc = product(acc, self.alts(x, want));
                }
                acc
            }
            (Expr::And(v), false) | (Expr::Or(v), true) => {
                v.iter().flat_map(|x| self.alts(x, want)).collect()
            }
            (Expr::AtLeast(n, ids), true) => {
                let mut acc = vec![Plan::default()];
                for i in ids.iter().take(*n) {
                    acc = product(acc, self.sel_true(*i));
                }
                acc
            }
            (Expr::AtLeast(_, ids), false) => vec![Plan {
                avoid: ids.clone(),
                ..Plan::default()
            }],
        };
        out.truncate(MAX_ALTS);
        out
    }
}

fn merge_pieces(pieces: &[Piece]) -> Option<String> {
    let mut exact: Option<&str> = None;
    let (mut pre, mut suf) = (String::new(), String::new());
    let mut mids = Vec::new();
    for p in pieces {
        match p {
            Piece::Exact(e) => {
                if exact.is_some_and(|x| x != e) {
                    return None;
                }
                exact = Some(e);
            }
            Piece::Prefix(a) => {
                if a.starts_with(pre.as_str()) {
                    pre = a.clone();
                } else if !pre.starts_with(a.as_str()) {
                    return None;
                }
            }
            Piece::Suffix(a) => {
                if a.ends_with(suf.as_str()) {
                    suf = a.clone();
                } else if !suf.ends_with(a.as_str()) {
                    return None;
                }
            }
            Piece::Mid(m) => mids.push(m.as_str()),
        }
    }
    if let Some(e) = exact {
        let ok = e.starts_with(pre.as_str())
            && e.ends_with(suf.as_str())
            && mids.iter().all(|m| e.contains(m));
        return ok.then(|| e.to_string());
    }
    let mut v = pre;
    for m in mids {
        if !v.is_empty() && !v.ends_with(' ') {
            v.push(' ');
        }
        v.push_str(m);
    }
    if !suf.is_empty() && !v.is_empty() {
        v.push(' ');
    }
    v.push_str(&suf);
    Some(v)
}

fn neutral(ft: FieldType) -> &'static [&'static str] {
    match ft {
        FieldType::Str => &["vigie-neutral", "zzz"],
        FieldType::Int | FieldType::Float => &["1", "65001", "0"],
        FieldType::Ip => &["192.0.2.77", "198.51.100.77", "2001:db8::77"],
    }
}

fn base_event(rule: &CompiledRule) -> Event {
    let kind = rule.route.kinds.first().copied().unwrap_or(Kind::Log);
    let mut ev = Event::new(kind, Timestamp::from_secs(1_718_195_400));
    ev.event.id = "synth-1".into();
    ev.host.name = "pve-synth".into();
    if let Some(l) = rule.route.loggers.first() {
        ev.log.get_or_insert_with(Default::default).logger = l.clone();
    }
    ev
}

fn build(
    rule: &CompiledRule,
    fields: &[FieldRef],
    plan: &Plan,
    replace: Option<(usize, &str)>,
) -> Option<Event> {
    let mut ev = base_event(rule);
    let mut slots: Vec<usize> = plan.musts.iter().map(|(s, _)| *s).collect();
    slots.sort();
    slots.dedup();
    for s in slots {
        if plan.absent.contains(&s) {
            return None;
        }
        let text = match replace {
            Some((rs, t)) if rs == s => t.to_string(),
            _ => {
                let pieces: Vec<Piece> = plan
                    .musts
                    .iter()
                    .filter(|(x, _)| *x == s)
                    .flat_map(|(_, p)| p.iter().cloned())
                    .collect();
                merge_pieces(&pieces)?
            }
        };
        fields[s].set(&mut ev, &text).ok()?;
    }
    Some(ev)
}

fn selection_true(rule: &CompiledRule, fields: &[FieldRef], i: usize, ev: &Event) -> bool {
    let mut sc = Scratch::default();
    sc.begin(fields.len());
    rule.selections[i].eval(ev, fields, &mut sc)
}

/// Builds an example for `rule` (whose slots index `fields`).
pub fn example(rule: &CompiledRule, fields: &[FieldRef]) -> Result<Example, String> {
    let cond = rule
        .conditions
        .first()
        .ok_or_else(|| "the rule has no condition".to_string())?;
    let g = Gen { rule };
    let plans = g.alts(cond, true);
    if plans.is_empty() {
        return Err("no branch of the condition can be satisfied by setting fields".into());
    }
    let mut last_err = String::from("every branch conflicts");
    for plan in &plans {
        if plan.musts.is_empty() {
            last_err = "the chosen branch sets no field (a purely negative condition)".into();
            continue;
        }
        let Some(ev) = build(rule, fields, plan, None) else {
            last_err = "the values required on one field conflict".into();
            continue;
        };
        if plan
            .avoid
            .iter()
            .any(|i| selection_true(rule, fields, *i, &ev))
        {
            last_err = "a negated selection matches the values the positive part needs".into();
            continue;
        }
        // Mutate the first required field to a neutral value.
        let (slot, _) = plan.musts[0];
        let field = &fields[slot];
        let ft = field.field_type();
        let mutated = if field == &FieldRef::Known(Known::EventDataset) {
            let cur = ev.event.kind;
            let other = Kind::ALL
                .into_iter()
                .find(|k| *k != cur)
                .unwrap_or(Kind::Log);
            build(rule, fields, plan, Some((slot, other.as_str())))
        } else {
            neutral(ft)
                .iter()
                .filter_map(|n| build(rule, fields, plan, Some((slot, n))))
                .next()
        };
        let Some(mutated) = mutated else {
            last_err = format!("no neutral value fits field {field}");
            continue;
        };
        return Ok(Example {
            matching: ev,
            mutated,
            mutated_field: field.path(),
        });
    }
    Err(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_samples_match() {
        for p in [
            r"(?i)/lib/python3\.([5-9]|[0-9]{2})/site-packages/",
            r"[^/]{100,}$",
            r"(.){200,}",
            r"(?:\s-[^-\s]{0,20}i|\s--inode\s)",
            r"-D",
            r"\s-[FTd]\s",
        ] {
            let s = regex_sample(p).expect("sample");
            assert!(
                regex::Regex::new(p).expect("re").is_match(&s),
                "{p} vs {s:?}"
            );
        }
    }

    #[test]
    fn pieces_merge() {
        assert_eq!(
            merge_pieces(&[
                Piece::Prefix("/tmp/".into()),
                Piece::Suffix(".sh".into()),
                Piece::Mid("x".into())
            ]),
            Some("/tmp/ x .sh".into())
        );
        assert_eq!(
            merge_pieces(&[Piece::Exact("a".into()), Piece::Exact("b".into())]),
            None
        );
        assert_eq!(
            merge_pieces(&[Piece::Exact("abc".into()), Piece::Mid("b".into())]),
            Some("abc".into())
        );
        assert_eq!(
            time_sample(TimePart::Hour, NumOp::Eq, 3)
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|ms| TimePart::Hour.of_millis(ms)),
            Some(3)
        );
        assert_eq!(
            time_sample(TimePart::Week, NumOp::Gt, 10)
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|ms| TimePart::Week.of_millis(ms)),
            Some(11)
        );
    }
}
