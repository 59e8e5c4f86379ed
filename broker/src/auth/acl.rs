//! The ACL file: which topics a client may publish to (write) and subscribe to (read).
//!
//! ```text
//! # every client
//! topic read public/#
//! pattern readwrite devices/%c/#        # %c: client id, %u: user name
//! user alice                            # rules for the user alice
//! topic readwrite alice/#
//! client sensor-7                       # rules for the client id sensor-7
//! topic write telemetry/sensor-7
//! ```
//!
//! Everything not allowed is denied. A subscription is allowed when an allowing pattern
//! covers the whole filter (`a/#` covers `a/+`; `a/b` does not cover `a/+`).

use std::path::Path;

use crate::router::filter;

/// Read (subscribe), write (publish) or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    read: bool,
    write: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    All,
    User(String),
    Client(String),
}

#[derive(Clone, Debug)]
struct Rule {
    scope: Scope,
    access: Access,
    pattern: String,
    /// `%c` / `%u` are substituted.
    substitute: bool,
}

/// A parsed ACL file.
#[derive(Debug, Default)]
pub struct Acl {
    rules: Vec<Rule>,
}

fn access(word: &str) -> Option<Access> {
    Some(match word {
        "read" => Access {
            read: true,
            write: false,
        },
        "write" => Access {
            read: false,
            write: true,
        },
        "readwrite" => Access {
            read: true,
            write: true,
        },
        _ => return None,
    })
}

impl Acl {
    /// Rules in the file.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rule at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Reads an ACL file; a bad line is an error naming the file and line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("ACL file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("ACL file {}: {e}", path.display()))
    }

    /// Parses ACL text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut rules = Vec::new();
        let mut scope = Scope::All;
        for (n, line) in text.lines().enumerate() {
            let line = strip_comment(line);
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let rest: Vec<&str> = words.collect();
            let bad = |why: &str| anyhow::anyhow!("line {}: {why}", n + 1);
            match (keyword, rest.as_slice()) {
                ("user", [name]) => scope = Scope::User((*name).to_string()),
                ("client", [id]) => scope = Scope::Client((*id).to_string()),
                ("topic" | "pattern", [a, pattern]) => {
                    let access = access(a).ok_or_else(|| bad("access must be read, write or readwrite"))?;
                    net::topic::validate_topic_filter(pattern)
                        .map_err(|e| bad(&format!("bad topic pattern {pattern}: {e}")))?;
                    let pattern_rule = keyword == "pattern";
                    rules.push(Rule {
                        scope: if pattern_rule { Scope::All } else { scope.clone() },
                        access,
                        pattern: (*pattern).to_string(),
                        substitute: pattern_rule,
                    });
                }
                _ => {
                    return Err(bad(
                        "expected `user NAME`, `client ID`, `topic ACCESS PATTERN` or `pattern ACCESS PATTERN`",
                    ))
                }
            }
        }
        Ok(Self { rules })
    }

    fn allowed(
        &self,
        user: Option<&str>,
        client: &str,
        want: impl Fn(Access) -> bool,
        test: impl Fn(&str) -> bool,
    ) -> bool {
        self.rules.iter().any(|r| {
            let applies = match &r.scope {
                Scope::All => true,
                Scope::User(u) => user == Some(u.as_str()),
                Scope::Client(c) => c == client,
            };
            if !applies || !want(r.access) {
                return false;
            }
            if r.substitute {
                if r.pattern.contains("%u") && user.is_none() {
                    return false;
                }
                let p = r
                    .pattern
                    .replace("%c", client)
                    .replace("%u", user.unwrap_or(""));
                test(&p)
            } else {
                test(&r.pattern)
            }
        })
    }

    /// May this client publish to `topic`?
    pub fn can_publish(&self, user: Option<&str>, client: &str, topic: &str) -> bool {
        self.allowed(user, client, |a| a.write, |p| filter::matches(p, topic))
    }

    /// May this client subscribe to `filter` (the inner filter of a shared subscription)?
    pub fn can_subscribe(&self, user: Option<&str>, client: &str, topic_filter: &str) -> bool {
        self.allowed(
            user,
            client,
            |a| a.read,
            |p| filter::covers(p, topic_filter),
        )
    }
}

/// The line without a trailing comment: `#` starts a comment at the line's start or after
/// whitespace when it is not a whole topic level (`a/#` keeps its wildcard).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'#' {
            continue;
        }
        let before = if i == 0 { None } else { bytes.get(i - 1) };
        let at_word_start = before.is_none_or(|c| c.is_ascii_whitespace());
        let after = bytes.get(i + 1);
        let whole_level = after.is_none_or(|c| c.is_ascii_whitespace());
        // A lone '#' word after "topic read" is a wildcard filter, not a comment.
        let words_before = line.get(..i).map_or(0, |s| s.split_whitespace().count());
        if at_word_start && !(whole_level && words_before == 2) {
            return line.get(..i).unwrap_or("");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# every client
topic read public/#
pattern readwrite devices/%c/#   # own device tree
pattern write users/%u/out
user alice
topic readwrite alice/#
topic read #
client sensor-7
topic write telemetry/sensor-7
";

    #[test]
    fn rules_apply_by_scope_with_substitution() {
        let acl = Acl::parse(TEXT).unwrap();
        assert!(acl.can_subscribe(None, "x", "public/+"));
        assert!(!acl.can_publish(None, "x", "public/a"));
        assert!(acl.can_publish(None, "x", "devices/x/t"));
        assert!(!acl.can_publish(None, "x", "devices/y/t"));
        assert!(acl.can_subscribe(None, "x", "devices/x/#"));
        assert!(!acl.can_publish(None, "x", "users//out"), "%u needs a user");
        assert!(acl.can_publish(Some("bob"), "x", "users/bob/out"));
        assert!(acl.can_publish(Some("alice"), "x", "alice/a"));
        assert!(acl.can_subscribe(Some("alice"), "x", "anything/#"));
        assert!(!acl.can_publish(Some("bob"), "x", "alice/a"));
        assert!(acl.can_publish(None, "sensor-7", "telemetry/sensor-7"));
        assert!(!acl.can_publish(None, "sensor-8", "telemetry/sensor-7"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = Acl::parse("topic read a\ntopic sideways b\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(Acl::parse("topic read a/#/b\n").is_err());
    }
}
