//! The Sigma condition grammar.
//!
//! ```text
//! expr    := and ('or' and)*
//! and     := not ('and' not)*
//! not     := 'not' not | primary
//! primary := '(' expr ')' | quant 'of' target | identifier
//! quant   := 'all' | INTEGER            (1 of, all of; N of = at least N, a vigie extension)
//! target  := 'them' | pattern           (pattern: identifier with * wildcards)
//! ```
//! Keywords are case-insensitive. Precedence, least to most binding: or, and,
//! not, `x of`, parentheses. `them` and patterns skip identifiers starting with
//! `_`, unless the pattern itself starts with `_`.

/// A parsed condition, identifiers not yet resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    Id(String),
    Of { quant: Quant, target: Target },
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    All,
    AtLeast(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Them,
    Pattern(String),
}

/// A condition over search identifiers resolved to their indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Sel(usize),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// At least `n` of the listed identifiers.
    AtLeast(usize, Vec<usize>),
}

impl Expr {
    /// Evaluates with `sel(i)` giving the value of identifier `i`.
    pub fn eval(&self, sel: &mut dyn FnMut(usize) -> bool) -> bool {
        match self {
            Expr::Sel(i) => sel(*i),
            Expr::Not(e) => !e.eval(sel),
            Expr::And(v) => v.iter().all(|e| e.eval(sel)),
            Expr::Or(v) => v.iter().any(|e| e.eval(sel)),
            Expr::AtLeast(n, ids) => {
                let mut hits = 0;
                for i in ids {
                    if sel(*i) {
                        hits += 1;
                        if hits >= *n {
                            return true;
                        }
                    }
                }
                false
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    Word(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '(' => out.push(Tok::LParen),
            ')' => out.push(Tok::RParen),
            '|' => {
                return Err(
                    "aggregation expressions after `|` were removed in sigma 2; \
                            express them as a correlation rule"
                        .into(),
                );
            }
            c if c.is_whitespace() => {}
            c if c.is_alphanumeric() || "_*-.?".contains(c) => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_alphanumeric() || "_*-.?".contains(d) {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Word(s[i..end].to_string()));
            }
            other => return Err(format!("unexpected character {other:?} at offset {i}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn expr(&mut self) -> Result<Cond, String> {
        let mut v = vec![self.and()?];
        while is_kw(self.peek(), "or") {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Cond::Or(v)
        })
    }
    fn and(&mut self) -> Result<Cond, String> {
        let mut v = vec![self.not()?];
        while is_kw(self.peek(), "and") {
            self.pos += 1;
            v.push(self.not()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Cond::And(v)
        })
    }
    fn not(&mut self) -> Result<Cond, String> {
        if is_kw(self.peek(), "not") {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Cond, String> {
        match self.peek().cloned() {
            None => Err(
                "unexpected end of condition; expected an identifier, `not`, `(` or `x of`".into(),
            ),
            Some(Tok::RParen) => Err("unexpected `)`".into()),
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.expr()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err("missing `)`".into());
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Word(w)) => {
                let lw = w.to_ascii_lowercase();
                if matches!(lw.as_str(), "and" | "or" | "of" | "them") {
                    return Err(format!("unexpected keyword `{w}`"));
                }
                self.pos += 1;
                let quant = if lw == "all" {
                    Some(Quant::All)
                } else if let Ok(n) = lw.parse::<usize>() {
                    if n == 0 {
                        return Err("`0 of` never matches; use `1 of` or `all of`".into());
                    }
                    Some(Quant::AtLeast(n))
                } else {
                    None
                };
                match quant {
                    Some(q) if is_kw(self.peek(), "of") => {
                        self.pos += 1;
                        let target = match self.peek().cloned() {
                            Some(Tok::Word(t)) if t.eq_ignore_ascii_case("them") => Target::Them,
                            Some(Tok::Word(t)) => Target::Pattern(t),
                            _ => {
                                return Err(format!("expected `them` or a pattern after `{w} of`"));
                            }
                        };
                        self.pos += 1;
                        Ok(Cond::Of { quant: q, target })
                    }
                    Some(_) if lw == "all" => Err("expected `of` after `all`".into()),
                    _ => Ok(Cond::Id(w)),
                }
            }
        }
    }
}

/// Parses a condition string.
pub fn parse(s: &str) -> Result<Cond, String> {
    let toks = tokenize(s)?;
    let mut p = Parser { toks, pos: 0 };
    let c = p.expr()?;
    if let Some(t) = p.peek() {
        let what = match t {
            Tok::LParen => "(".to_string(),
            Tok::RParen => ")".to_string(),
            Tok::Word(w) => w.clone(),
        };
        return Err(format!(
            "unexpected `{what}` after a complete expression; expected `and` or `or`"
        ));
    }
    Ok(c)
}

/// Glob match with `*` only (identifier patterns).
pub(crate) fn pattern_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Resolves identifiers against `names` (the search identifiers, in order).
pub fn resolve(c: &Cond, names: &[String]) -> Result<Expr, String> {
    Ok(match c {
        Cond::Id(id) => {
            let i = names
                .iter()
                .position(|n| n == id)
                .ok_or_else(|| format!("identifier `{id}` is not defined in detection"))?;
            Expr::Sel(i)
        }
        Cond::Not(e) => Expr::Not(Box::new(resolve(e, names)?)),
        Cond::And(v) => Expr::And(
            v.iter()
                .map(|e| resolve(e, names))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Or(v) => Expr::Or(
            v.iter()
                .map(|e| resolve(e, names))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Of { quant, target } => {
            let ids: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| match target {
                    Target::Them => !n.starts_with('_'),
                    Target::Pattern(p) => {
                        (p.starts_with('_') || !n.starts_with('_')) && pattern_match(p, n)
                    }
                })
                .map(|(i, _)| i)
                .collect();
            if ids.is_empty() {
                return Err(match target {
                    Target::Them => "`them` matches no search identifier".into(),
                    Target::Pattern(p) => format!("pattern `{p}` matches no search identifier"),
                });
            }
            match quant {
                Quant::All => Expr::And(ids.into_iter().map(Expr::Sel).collect()),
                Quant::AtLeast(1) => Expr::Or(ids.into_iter().map(Expr::Sel).collect()),
                Quant::AtLeast(n) => {
                    if *n > ids.len() {
                        return Err(format!(
                            "`{n} of` needs at least {n} identifiers, the target matches {}",
                            ids.len()
                        ));
                    }
                    Expr::AtLeast(*n, ids)
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Evaluates `cond` over identifiers `ns` with the given truth values.
    fn ev(cond: &str, ns: &[&str], truth: &[bool]) -> bool {
        let e = resolve(&parse(cond).expect("parse"), &names(ns)).expect("resolve");
        e.eval(&mut |i| truth[i])
    }

    #[test]
    fn precedence_table() {
        let ns = ["a", "b", "c"];
        // (condition, truth of a b c, expected)
        let cases: &[(&str, [bool; 3], bool)] = &[
            ("a or b and c", [true, false, false], true), // or binds least
            ("a or b and c", [false, true, false], false),
            ("(a or b) and c", [true, false, false], false),
            ("not a and b", [false, true, false], true), // not binds tighter than and
            ("not a and b", [true, true, false], false),
            ("not (a and b)", [true, false, false], true),
            ("not not a", [true, false, false], true),
            ("a AND NOT b", [true, false, false], true), // keywords are case-insensitive
            ("a and b or c", [false, false, true], true),
            ("a and (b or c)", [true, false, true], true),
            ("((a))", [true, false, false], true),
        ];
        for (c, t, want) in cases {
            assert_eq!(ev(c, &ns, t), *want, "{c} with {t:?}");
        }
    }

    #[test]
    fn of_patterns_and_them() {
        let ns = ["selection_a", "selection_b", "filter_x", "_hidden"];
        let cases: &[(&str, [bool; 4], bool)] = &[
            ("1 of selection_*", [false, true, false, false], true),
            ("all of selection_*", [false, true, false, false], false),
            ("all of selection_*", [true, true, false, false], true),
            ("1 of them", [false, false, false, true], false), // _hidden excluded
            ("all of them", [true, true, true, false], true),  // _hidden not required
            ("1 of _hid*", [false, false, false, true], true), // explicit underscore pattern
            (
                "1 of selection* and not 1 of filter*",
                [true, false, true, false],
                false,
            ),
            (
                "1 of selection* and not 1 of filter*",
                [true, false, false, false],
                true,
            ),
            ("2 of them", [true, false, true, false], true),
            ("2 of them", [true, false, false, true], false),
            (
                "not 1 of selection_* or filter_x",
                [false, false, true, false],
                true,
            ),
            ("1 of *_b", [false, true, false, false], true),
            ("1 of sel*_a", [true, false, false, false], true),
        ];
        for (c, t, want) in cases {
            assert_eq!(ev(c, &ns, t), *want, "{c} with {t:?}");
        }
    }

    #[test]
    fn errors_are_precise() {
        let ns = names(&["sel", "filter"]);
        let err = |c: &str| match parse(c) {
            Err(e) => e,
            Ok(p) => resolve(&p, &ns).err().unwrap_or_else(|| "ok".into()),
        };
        assert_eq!(
            err("sel and"),
            "unexpected end of condition; expected an identifier, `not`, `(` or `x of`"
        );
        assert_eq!(err("(sel"), "missing `)`");
        assert_eq!(
            err("sel filter"),
            "unexpected `filter` after a complete expression; expected `and` or `or`"
        );
        assert_eq!(err("nope"), "identifier `nope` is not defined in detection");
        assert_eq!(err("1 of x*"), "pattern `x*` matches no search identifier");
        assert_eq!(err("all sel"), "expected `of` after `all`");
        assert_eq!(
            err("3 of them"),
            "`3 of` needs at least 3 identifiers, the target matches 2"
        );
        assert!(err("sel | count() > 5").starts_with("aggregation expressions"));
        assert_eq!(err("sel or or filter"), "unexpected keyword `or`");
        assert_eq!(err("sel and filter"), "ok");
    }
}
