//! Evaluating the target's CHECK constraints (of tables and of domains) on a mapped row, in
//! Rust, so a plan can say which rows the target will refuse before a single one is written.
//!
//! The parser reads what `pg_get_constraintdef` prints: comparisons, `AND`/`OR`/`NOT`,
//! `IS [NOT] NULL`, `~` regular expressions, `= ANY (ARRAY[...])` (`IN`) and
//! `<> ALL (ARRAY[...])` (`NOT IN`), casts (`::numeric`), `lower`/`upper`/`length`/`btrim`,
//! and arithmetic `+ -`. Logic is SQL's three-valued one: a
//! CHECK fails only when it is false, never when it is NULL. An expression it cannot read is
//! reported as such (the row's fate is then left to the database) rather than guessed at.

use runtime::error::BadInput;
use std::collections::HashMap;

use regex::Regex;

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Num(f64),
    Text(String),
    /// Microseconds since 1970-01-01, as the column or cast keeps it ([`read_time`]).
    Time(i64),
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Lit(Val),
    Col(String),
    Cast(Box<Expr>, String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    Cmp(Box<Expr>, String, Box<Expr>),
    Any(Box<Expr>, String, Vec<Expr>),
    /// `x op ALL (ARRAY[...])`, what PostgreSQL prints for `NOT IN (...)`.
    All(Box<Expr>, String, Vec<Expr>),
    Arith(Box<Expr>, char, Box<Expr>),
    Call(String, Vec<Expr>),
}

/// A parsed CHECK, ready to evaluate on rows.
#[derive(Debug)]
pub struct CheckExpr {
    expr: Expr,
    regexes: HashMap<String, Regex>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Cast,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, BadInput> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => (out.push(Tok::LParen), i += 1).1,
            ')' => (out.push(Tok::RParen), i += 1).1,
            '[' => (out.push(Tok::LBracket), i += 1).1,
            ']' => (out.push(Tok::RBracket), i += 1).1,
            ',' => (out.push(Tok::Comma), i += 1).1,
            ':' if b.get(i + 1) == Some(&':') => (out.push(Tok::Cast), i += 2).1,
            '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(BadInput("unterminated string".into())),
                        Some('\'') if b.get(i + 1) == Some(&'\'') => (text.push('\''), i += 2).1,
                        Some('\'') => break i += 1,
                        Some(ch) => (text.push(*ch), i += 1).1,
                    }
                }
                out.push(Tok::Str(text));
            }
            '"' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&ch| ch == '"')
                    .ok_or_else(|| BadInput("unterminated identifier".into()))?
                    + i
                    + 1;
                out.push(Tok::Ident(b[i + 1..end].iter().collect()));
                i = end + 1;
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num(b[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(b[start..i].iter().collect()));
            }
            _ => {
                let two: String = b[i..(i + 2).min(b.len())].iter().collect();
                let three: String = b[i..(i + 3).min(b.len())].iter().collect();
                let op = if three == "!~*" {
                    three
                } else if ["<=", ">=", "<>", "!=", "~*", "!~"].contains(&two.as_str()) {
                    two
                } else if "=<>~+-*/".contains(c) {
                    c.to_string()
                } else {
                    return Err(BadInput(format!("unexpected `{c}`")));
                };
                i += op.len();
                out.push(Tok::Op(op));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn kw(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn eat_kw(&mut self, word: &str) -> bool {
        let yes = self.kw(word);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect(&mut self, t: Tok) -> Result<(), BadInput> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            Err(BadInput(format!("expected {t:?}, found {:?}", self.peek())))
        }
    }

    fn or(&mut self) -> Result<Expr, BadInput> {
        let mut e = self.and()?;
        while self.eat_kw("OR") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, BadInput> {
        let mut e = self.not()?;
        while self.eat_kw("AND") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, BadInput> {
        if self.eat_kw("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, BadInput> {
        let left = self.add()?;
        if self.eat_kw("IS") {
            let negated = self.eat_kw("NOT");
            if !self.eat_kw("NULL") {
                return Err(BadInput("only IS [NOT] NULL is understood".into()));
            }
            return Ok(Expr::IsNull(Box::new(left), negated));
        }
        if self.eat_kw("BETWEEN") {
            let lo = self.add()?;
            if !self.eat_kw("AND") {
                return Err(BadInput("BETWEEN without AND".into()));
            }
            let hi = self.add()?;
            return Ok(Expr::And(
                Box::new(Expr::Cmp(Box::new(left.clone()), ">=".into(), Box::new(lo))),
                Box::new(Expr::Cmp(Box::new(left), "<=".into(), Box::new(hi))),
            ));
        }
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            if ["=", "<>", "!=", "<", ">", "<=", ">=", "~", "~*", "!~", "!~*"]
                .contains(&op.as_str())
            {
                self.pos += 1;
                let any = self.eat_kw("ANY");
                if any || self.eat_kw("ALL") {
                    self.expect(Tok::LParen)?;
                    let list = self.array()?;
                    self.expect(Tok::RParen)?;
                    return Ok(match any {
                        true => Expr::Any(Box::new(left), op, list),
                        false => Expr::All(Box::new(left), op, list),
                    });
                }
                let right = self.add()?;
                return Ok(Expr::Cmp(Box::new(left), op, Box::new(right)));
            }
        }
        Ok(left)
    }

    fn array(&mut self) -> Result<Vec<Expr>, BadInput> {
        // `(ARRAY[...])::text[]`, as a varchar column's list is printed.
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let items = self.array()?;
            self.expect(Tok::RParen)?;
            self.casts(Expr::Lit(Val::Null))?;
            return Ok(items);
        }
        if !self.eat_kw("ARRAY") {
            return Err(BadInput(
                "only ANY (ARRAY[...]) and ALL (ARRAY[...]) are understood".into(),
            ));
        }
        self.expect(Tok::LBracket)?;
        let mut items = vec![self.add()?];
        while self.peek() == Some(&Tok::Comma) {
            self.pos += 1;
            items.push(self.add()?);
        }
        self.expect(Tok::RBracket)?;
        // `ARRAY[...]::text[]`
        self.casts(Expr::Lit(Val::Null))?;
        Ok(items)
    }

    fn add(&mut self) -> Result<Expr, BadInput> {
        let mut e = self.unary()?;
        while let Some(Tok::Op(op)) = self.peek().cloned() {
            if op != "+" && op != "-" {
                break;
            }
            self.pos += 1;
            e = Expr::Arith(
                Box::new(e),
                op.chars().next().expect("one char"),
                Box::new(self.unary()?),
            );
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, BadInput> {
        if self.peek() == Some(&Tok::Op("-".into())) {
            self.pos += 1;
            return Ok(Expr::Arith(
                Box::new(Expr::Lit(Val::Num(0.0))),
                '-',
                Box::new(self.unary()?),
            ));
        }
        let p = self.primary()?;
        self.casts(p)
    }

    fn casts(&mut self, mut e: Expr) -> Result<Expr, BadInput> {
        while self.peek() == Some(&Tok::Cast) {
            self.pos += 1;
            let mut name = String::new();
            while let Some(Tok::Ident(w)) = self.peek().cloned() {
                let continues = name.is_empty()
                    || ["with", "without", "time", "zone", "varying", "precision"]
                        .contains(&w.to_lowercase().as_str());
                if !continues {
                    break;
                }
                if !name.is_empty() {
                    name.push(' ');
                }
                name.push_str(&w.to_lowercase());
                self.pos += 1;
            }
            if self.peek() == Some(&Tok::LParen) {
                while self.peek() != Some(&Tok::RParen) {
                    self.pos += 1;
                }
                self.pos += 1;
            }
            if self.peek() == Some(&Tok::LBracket) {
                self.pos += 2;
                name.push_str("[]");
            }
            // A literal's cast is the same every row: made once, here.
            e = match e {
                Expr::Lit(v) => Expr::Lit(cast(v, &name)),
                other => Expr::Cast(Box::new(other), name),
            };
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, BadInput> {
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.or()?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Str(s)) => (self.pos += 1, Ok(Expr::Lit(Val::Text(s)))).1,
            Some(Tok::Num(n)) => {
                (
                    self.pos += 1,
                    Ok(Expr::Lit(Val::Num(
                        n.parse().map_err(|_| BadInput(format!("bad number {n}")))?,
                    ))),
                )
                    .1
            }
            Some(Tok::Ident(w)) => {
                self.pos += 1;
                let lw = w.to_lowercase();
                match lw.as_str() {
                    "null" => return Ok(Expr::Lit(Val::Null)),
                    "true" => return Ok(Expr::Lit(Val::Bool(true))),
                    "false" => return Ok(Expr::Lit(Val::Bool(false))),
                    _ => {}
                }
                if self.peek() == Some(&Tok::LParen) {
                    self.pos += 1;
                    let mut args = Vec::new();
                    if self.peek() != Some(&Tok::RParen) {
                        args.push(self.or()?);
                        while self.peek() == Some(&Tok::Comma) {
                            self.pos += 1;
                            args.push(self.or()?);
                        }
                    }
                    self.expect(Tok::RParen)?;
                    if !["lower", "upper", "length", "char_length", "btrim", "abs", "coalesce"]
                        .contains(&lw.as_str())
                    {
                        return Err(BadInput(format!("function {w}() is not understood")));
                    }
                    return Ok(Expr::Call(lw, args));
                }
                Ok(Expr::Col(w))
            }
            other => Err(BadInput(format!("unexpected {other:?}"))),
        }
    }
}

impl CheckExpr {
    pub fn parse(text: &str) -> Result<CheckExpr, BadInput> {
        let mut p = Parser { toks: tokenize(text)?, pos: 0 };
        let expr = p.or()?;
        if p.pos != p.toks.len() {
            return Err(BadInput(format!("unexpected {:?} after the expression", p.toks[p.pos])));
        }
        let mut regexes = HashMap::new();
        collect_regexes(&expr, &mut regexes)?;
        Ok(CheckExpr { expr, regexes })
    }

    /// `Some(false)` when the row violates the CHECK; `col` gives a column's (or, in a domain
    /// constraint, `VALUE`'s) typed value.
    pub fn holds(&self, col: &dyn Fn(&str) -> Val) -> Option<bool> {
        match self.eval(&self.expr, col) {
            Val::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn eval(&self, e: &Expr, col: &dyn Fn(&str) -> Val) -> Val {
        match e {
            Expr::Lit(v) => v.clone(),
            Expr::Col(c) => col(c),
            Expr::Cast(inner, ty) => cast(self.eval(inner, col), ty),
            Expr::Not(inner) => match self.eval(inner, col) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Null,
            },
            Expr::And(a, b) => match (self.eval(a, col), self.eval(b, col)) {
                (Val::Bool(false), _) | (_, Val::Bool(false)) => Val::Bool(false),
                (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
                _ => Val::Null,
            },
            Expr::Or(a, b) => match (self.eval(a, col), self.eval(b, col)) {
                (Val::Bool(true), _) | (_, Val::Bool(true)) => Val::Bool(true),
                (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
                _ => Val::Null,
            },
            Expr::IsNull(inner, negated) => {
                Val::Bool((self.eval(inner, col) == Val::Null) != *negated)
            }
            Expr::Cmp(a, op, b) => self.compare(self.eval(a, col), op, self.eval(b, col)),
            Expr::Any(a, op, list) => self.quantified((a, op, list), col, true),
            Expr::All(a, op, list) => self.quantified((a, op, list), col, false),
            Expr::Arith(a, op, b) => match (num(self.eval(a, col)), num(self.eval(b, col))) {
                (Some(x), Some(y)) => Val::Num(if *op == '+' { x + y } else { x - y }),
                _ => Val::Null,
            },
            Expr::Call(f, args) => {
                let vals: Vec<Val> = args.iter().map(|a| self.eval(a, col)).collect();
                match (f.as_str(), vals.first()) {
                    ("coalesce", _) => {
                        vals.into_iter().find(|v| *v != Val::Null).unwrap_or(Val::Null)
                    }
                    (_, None | Some(Val::Null)) => Val::Null,
                    ("lower", Some(v)) => Val::Text(text(v).to_lowercase()),
                    ("upper", Some(v)) => Val::Text(text(v).to_uppercase()),
                    ("length" | "char_length", Some(v)) => Val::Num(text(v).chars().count() as f64),
                    ("btrim", Some(v)) => Val::Text(text(v).trim().to_owned()),
                    ("abs", Some(v)) => {
                        num(v.clone()).map(|n| Val::Num(n.abs())).unwrap_or(Val::Null)
                    }
                    _ => Val::Null,
                }
            }
        }
    }

    /// `a op ANY (list)` (`decides` true) or `a op ALL (list)` (`decides` false): the first
    /// comparison that comes out as `decides` is the answer; else unknown if one was, else the
    /// opposite of `decides`.
    fn quantified(
        &self,
        (a, op, list): (&Expr, &str, &[Expr]),
        col: &dyn Fn(&str) -> Val,
        decides: bool,
    ) -> Val {
        let left = self.eval(a, col);
        let mut result = Val::Bool(!decides);
        for item in list {
            match self.compare(left.clone(), op, self.eval(item, col)) {
                Val::Bool(b) if b == decides => return Val::Bool(decides),
                Val::Null => result = Val::Null,
                _ => {}
            }
        }
        result
    }

    fn compare(&self, a: Val, op: &str, b: Val) -> Val {
        if a == Val::Null || b == Val::Null {
            return Val::Null;
        }
        if op.contains('~') {
            let (t, pattern) = (text(&a), text(&b));
            let key = if op.contains('*') { format!("(?i){pattern}") } else { pattern };
            let matched = self.regexes.get(&key).is_some_and(|r| r.is_match(&t));
            return Val::Bool(matched != op.starts_with('!'));
        }
        let ord = match (&a, &b) {
            (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
            (Val::Time(x), Val::Time(y)) => Some(x.cmp(y)),
            (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
            (Val::Time(x), Val::Text(s)) => parse_time(s).map(|y| x.cmp(&y)),
            (Val::Text(s), Val::Time(y)) => parse_time(s).map(|x| x.cmp(y)),
            (Val::Num(x), other) | (other, Val::Num(x)) if num(other.clone()).is_some() => {
                let y = num(other.clone()).expect("checked");
                if matches!(a, Val::Num(_)) {
                    x.partial_cmp(&y)
                } else {
                    y.partial_cmp(x)
                }
            }
            // Texts order by the column's collation, which is the server's to apply: only
            // equality is judged here.
            _ if matches!(op, "=" | "<>" | "!=") => Some(text(&a).cmp(&text(&b))),
            _ => None,
        };
        let Some(ord) = ord else { return Val::Null };
        use std::cmp::Ordering::*;
        Val::Bool(match op {
            "=" => ord == Equal,
            "<>" | "!=" => ord != Equal,
            "<" => ord == Less,
            ">" => ord == Greater,
            "<=" => ord != Greater,
            ">=" => ord != Less,
            _ => return Val::Null,
        })
    }
}

fn collect_regexes(e: &Expr, out: &mut HashMap<String, Regex>) -> Result<(), BadInput> {
    match e {
        Expr::Cmp(a, op, b) => {
            if op.contains('~') {
                let Expr::Lit(Val::Text(p)) = strip_cast(b) else {
                    return Err(BadInput("a regular expression that is not a literal".into()));
                };
                let key = if op.contains('*') { format!("(?i){p}") } else { p.clone() };
                let re = Regex::new(&key)
                    .map_err(|e| BadInput(format!("regular expression {p:?}: {e}")))?;
                out.insert(key, re);
            }
            collect_regexes(a, out)?;
            collect_regexes(b, out)
        }
        Expr::Cast(a, _) | Expr::Not(a) | Expr::IsNull(a, _) => collect_regexes(a, out),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Arith(a, _, b) => {
            collect_regexes(a, out)?;
            collect_regexes(b, out)
        }
        Expr::Any(a, _, list) | Expr::All(a, _, list) => {
            collect_regexes(a, out)?;
            list.iter().try_for_each(|x| collect_regexes(x, out))
        }
        Expr::Call(_, args) => args.iter().try_for_each(|x| collect_regexes(x, out)),
        Expr::Lit(_) | Expr::Col(_) => Ok(()),
    }
}

fn strip_cast(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(inner, _) => strip_cast(inner),
        other => other,
    }
}

fn text(v: &Val) -> String {
    match v {
        Val::Null => String::new(),
        Val::Bool(b) => if *b { "true" } else { "false" }.into(),
        Val::Num(n) => n.to_string(),
        Val::Text(s) => s.clone(),
        Val::Time(t) => t.to_string(),
    }
}

fn num(v: Val) -> Option<f64> {
    match v {
        Val::Num(n) => Some(n),
        Val::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Converts a value as a cast to `ty` would (for the types CHECKs use).
pub fn cast(v: Val, ty: &str) -> Val {
    if v == Val::Null {
        return v;
    }
    let ty = ty.trim_end_matches("[]");
    if let Some(kind) = TimeKind::of(ty) {
        return match v {
            Val::Time(t) => Val::Time(kind.keep(t)),
            other => read_time(&text(&other), kind).map(Val::Time).unwrap_or(Val::Null),
        };
    }
    match ty {
        "numeric" | "integer" | "smallint" | "bigint" | "real" | "double precision" | "int"
        | "int4" | "int2" | "int8" | "decimal" => num(v).map(Val::Num).unwrap_or(Val::Null),
        "boolean" | "bool" => match v {
            Val::Bool(_) => v,
            other => match text(&other).as_str() {
                "t" | "true" | "1" | "yes" | "y" => Val::Bool(true),
                "f" | "false" | "0" | "no" | "n" => Val::Bool(false),
                _ => Val::Null,
            },
        },
        _ => match v {
            Val::Text(_) => v,
            other => Val::Text(text(&other)),
        },
    }
}

/// Microseconds a day.
const DAY: i64 = 86_400_000_000;

/// How a column or a cast keeps a time: a date its day, a timestamp its clock as written (the
/// server ignores a zone in its text), a timestamptz its instant (not read without a zone in
/// its text: the target's session reads that in its own time zone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeKind {
    Date,
    Timestamp,
    Timestamptz,
}

impl TimeKind {
    /// The kind of a type, by any of its names (`date`, `timestamp`, `timestamptz`, `timestamp
    /// with time zone`, ...); `None` for a type that is not a time.
    pub fn of(ty: &str) -> Option<TimeKind> {
        Some(match ty {
            "date" => TimeKind::Date,
            "timestamp" | "timestamp without time zone" => TimeKind::Timestamp,
            "timestamptz" | "timestamp with time zone" => TimeKind::Timestamptz,
            _ => return None,
        })
    }

    /// A time already read (as UTC where it had a zone), as this kind keeps it.
    fn keep(self, micros: i64) -> i64 {
        match self {
            TimeKind::Date => micros.div_euclid(DAY) * DAY,
            TimeKind::Timestamp | TimeKind::Timestamptz => micros,
        }
    }
}

/// A time in the form PostgreSQL writes (`YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][UTC|Z|+HH[:MM]]`)
/// as `kind` keeps it, in microseconds since 1970-01-01. Any other form is `None`: the server
/// reads many more (`infinity`, BC dates, years past 9999, named zones, other date styles),
/// and a value not read here is left to it, never refused or misjudged here.
pub fn read_time(s: &str, kind: TimeKind) -> Option<i64> {
    let (micros, zone) = runtime::time::timestamp(s)?;
    Some(match kind {
        TimeKind::Timestamptz => micros - zone? * 1_000_000,
        other => other.keep(micros),
    })
}

/// A time read where the type it is compared as is not known: only a text that means the same
/// instant as any of the three kinds (no zone, or UTC itself).
pub fn parse_time(s: &str) -> Option<i64> {
    match runtime::time::timestamp(s)? {
        (micros, None | Some(0)) => Some(micros),
        _ => None,
    }
}

/// Whether `s` begins with an ISO date (`YYYY-MM-DD`) that no calendar has: month 13, day 32,
/// April 31, February 30. The server refuses such a value whatever follows it; February 29 of
/// a year that is not leap is left to it (BC years count leap years differently).
pub fn impossible_date(s: &str) -> bool {
    let b = s.trim().as_bytes();
    let number = |from: usize, to: usize| {
        b.get(from..to)
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|d| d.iter().fold(0usize, |n, &c| n * 10 + usize::from(c - b'0')))
    };
    let (Some(_), Some(month), Some(day)) = (number(0, 4), number(5, 7), number(8, 10)) else {
        return false;
    };
    if b[4] != b'-' || b[7] != b'-' || b.get(10).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    const MOST: [usize; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    match month.checked_sub(1).and_then(|m| MOST.get(m)) {
        Some(&most) => day == 0 || day > most,
        None => true,
    }
}

#[cfg(test)]
mod tests;
