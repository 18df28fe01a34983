//! `--fail-on`: conditions on records that make a run end with exit 5, for pipelines that
//! gate on findings (`--fail-on 'malicious>=5'`, `--fail-on 'threat_category==ransomware'`).
//!
//! A condition is `FIELD OP VALUE` over the output fields; several, separated by commas, match
//! when any one does. Numeric fields (the verdict counts, `engines_total`, `size`,
//! `reputation`, `times_submitted`, `occurrences`) compare as numbers with `>=`, `>`, `<=`,
//! `<`, `==`, `!=`; text fields compare with `==` and `!=` (case-insensitive); `tags==X` holds
//! when X is one of the tags. An absent value (a `not_found` record has no `malicious`)
//! matches nothing. Parsed once, checked on every record the writer writes.

use std::fmt;
use std::str::FromStr;

use crate::record::{Field, Record, Val};

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Op::Ge => ordering != Less,
            Op::Gt => ordering == Greater,
            Op::Le => ordering != Greater,
            Op::Lt => ordering == Less,
            Op::Eq => ordering == Equal,
            Op::Ne => ordering != Equal,
        }
    }
}

/// What a field is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Operand {
    Number(i64),
    Text(String),
}

/// One `FIELD OP VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Condition {
    field: Field,
    op: Op,
    value: Operand,
}

/// `--fail-on`'s conditions: a record matches when any of them holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailOn(Vec<Condition>);

/// Why a `--fail-on` expression cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("bad --fail-on {expr:?}: {why}")]
pub struct FailOnError {
    expr: String,
    why: String,
}

fn numeric(field: Field) -> bool {
    matches!(
        field,
        Field::Malicious
            | Field::Suspicious
            | Field::Undetected
            | Field::Harmless
            | Field::Timeout
            | Field::ConfirmedTimeout
            | Field::Failure
            | Field::TypeUnsupported
            | Field::EnginesTotal
            | Field::Size
            | Field::Reputation
            | Field::TimesSubmitted
            | Field::Occurrences
    )
}

impl FromStr for FailOn {
    type Err = FailOnError;

    fn from_str(expr: &str) -> Result<FailOn, FailOnError> {
        let bad = |why: String| FailOnError {
            expr: expr.to_owned(),
            why,
        };
        let mut conditions = Vec::new();
        for part in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (at, op, len) = [
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("==", Op::Eq),
                ("!=", Op::Ne),
                (">", Op::Gt),
                ("<", Op::Lt),
                ("=", Op::Eq),
            ]
            .iter()
            .filter_map(|(s, op)| part.find(s).map(|i| (i, *op, s.len())))
            .min_by_key(|(i, _, len)| (*i, usize::MAX - len))
            .ok_or_else(|| bad(format!("{part:?} has no comparison (>=, >, <=, <, ==, !=)")))?;
            let name = part[..at].trim();
            let value = part[at + len..].trim();
            let field = Field::ALL
                .iter()
                .copied()
                .find(|f| f.name() == name)
                .ok_or_else(|| bad(format!("unknown field {name:?}")))?;
            if value.is_empty() {
                return Err(bad(format!("{part:?} has no value")));
            }
            let value = if numeric(field) {
                Operand::Number(
                    value
                        .parse()
                        .map_err(|_| bad(format!("{name} is a number; {value:?} is not")))?,
                )
            } else {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(bad(format!(
                        "{name} is text: compare it with == or !=, not {}",
                        op.symbol()
                    )));
                }
                Operand::Text(value.trim_matches(['"', '\'']).to_owned())
            };
            conditions.push(Condition { field, op, value });
        }
        if conditions.is_empty() {
            return Err(bad("no condition".into()));
        }
        Ok(FailOn(conditions))
    }
}

impl fmt::Display for FailOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let value = match &c.value {
                Operand::Number(n) => n.to_string(),
                Operand::Text(t) => t.clone(),
            };
            write!(f, "{}{}{value}", c.field.name(), c.op.symbol())?;
        }
        Ok(())
    }
}

impl FailOn {
    /// Whether `record` matches any condition.
    pub fn matches(&self, record: &Record) -> bool {
        self.0.iter().any(|c| c.holds(record))
    }
}

impl Condition {
    fn holds(&self, record: &Record) -> bool {
        let value = self.field.value(record);
        match (&self.value, value) {
            (Operand::Number(want), Val::U64(n)) => {
                let n = i128::from(n);
                self.op.holds(n.cmp(&i128::from(*want)))
            }
            (Operand::Number(want), Val::I64(n)) => self.op.holds(n.cmp(want)),
            (Operand::Text(want), Val::List(items)) => {
                let has = items.iter().any(|t| t.eq_ignore_ascii_case(want));
                (self.op == Op::Eq) == has
            }
            (Operand::Text(want), Val::Str(s)) => {
                (self.op == Op::Eq) == s.eq_ignore_ascii_case(want)
            }
            (Operand::Text(want), Val::Owned(s)) => {
                (self.op == Op::Eq) == s.eq_ignore_ascii_case(want)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Stats, Status};

    fn record(malicious: u32, tags: &[&str]) -> Record {
        Record {
            input: "x".into(),
            status: Some(Status::Ok),
            stats: Some(Stats {
                malicious,
                undetected: 10,
                ..Stats::default()
            }),
            threat_category: Some("Ransomware".into()),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            reputation: Some(-20),
            ..Record::default()
        }
    }

    #[test]
    fn numbers_compare_as_numbers_and_text_by_equality() {
        let cases: &[(&str, u32, bool)] = &[
            ("malicious>=5", 5, true),
            ("malicious>=5", 4, false),
            ("malicious>5", 5, false),
            ("malicious<1", 0, true),
            ("malicious==0", 0, true),
            ("malicious!=0", 0, false),
            ("engines_total>=10", 0, true),
            ("reputation<0", 0, true),
            ("threat_category==ransomware", 0, true),
            ("threat_category!=ransomware", 0, false),
            ("status==ok", 0, true),
            ("tags==peexe", 0, true),
            ("tags!=peexe", 0, false),
            ("tags==elf", 0, false),
            ("malicious>=50, threat_category==ransomware", 0, true),
            ("size>0", 0, false),
        ];
        for (expr, malicious, want) in cases {
            let cond: FailOn = expr.parse().expect(expr);
            assert_eq!(
                cond.matches(&record(*malicious, &["peexe", "signed"])),
                *want,
                "{expr} with malicious={malicious}"
            );
        }
    }

    #[test]
    fn an_absent_value_matches_nothing() {
        let not_found = Record {
            status: Some(Status::NotFound),
            ..Record::default()
        };
        for expr in [
            "malicious>=0",
            "malicious<1000",
            "threat_label==x",
            "malicious!=3",
        ] {
            let cond: FailOn = expr.parse().expect(expr);
            assert!(!cond.matches(&not_found), "{expr}");
        }
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expr, why) in [
            ("malicious", "no comparison"),
            ("nope>=1", "unknown field"),
            ("malicious>=many", "is a number"),
            ("threat_label>=x", "is text"),
            ("malicious>=", "no value"),
            ("", "no condition"),
        ] {
            let err = expr.parse::<FailOn>().expect_err(expr).to_string();
            assert!(err.contains(why), "{expr}: {err}");
        }
        let parsed: FailOn = "malicious >= 5 , status = error".parse().expect("spaces");
        assert_eq!(parsed.to_string(), "malicious>=5,status==error");
    }
}
