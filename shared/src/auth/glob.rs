//! Glob patterns for repository names and OIDC claim values.
//!
//! `*` matches any run of characters except `/` (one path segment), `**` matches any run
//! including `/`, `?` matches one character other than `/`. Everything else matches itself.
//! So `team/*` is `team/app` but not `team/app/sub`; `team/**` is both.

/// Whether `text` matches `pattern` in full. Dynamic programming over (pattern, text) positions:
/// linear in their product, so a hostile name cannot make matching blow up.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<Token> = tokens(pattern);
    let t: Vec<char> = text.chars().collect();
    // reach[j]: the pattern prefix consumed so far matches text[..j].
    let mut reach = vec![false; t.len() + 1];
    reach[0] = true;
    for token in &p {
        let mut next = vec![false; t.len() + 1];
        match token {
            Token::Literal(c) => {
                for j in 0..t.len() {
                    if reach[j] && t[j] == *c {
                        next[j + 1] = true;
                    }
                }
            }
            Token::One => {
                for j in 0..t.len() {
                    if reach[j] && t[j] != '/' {
                        next[j + 1] = true;
                    }
                }
            }
            Token::Segment | Token::Any => {
                let crosses = matches!(token, Token::Any);
                for j in 0..=t.len() {
                    if reach[j] || (j > 0 && next[j - 1] && (crosses || t[j - 1] != '/')) {
                        next[j] = true;
                    }
                }
            }
        }
        reach = next;
    }
    reach[t.len()]
}

enum Token {
    Literal(char),
    One,
    Segment,
    Any,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Token::Any
            }
            '*' => Token::Segment,
            '?' => Token::One,
            c => Token::Literal(c),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn segments_and_any() {
        assert!(matches("team/*", "team/app"));
        assert!(!matches("team/*", "team/app/sub"));
        assert!(matches("team/**", "team/app/sub"));
        assert!(!matches("team/**", "teams/app"));
        assert!(matches("**", "a/b/c"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(matches("refs/heads/*", "refs/heads/main"));
        assert!(!matches("refs/heads/*", "refs/heads/feature/x"));
        assert!(matches("repo:org/*:ref:refs/heads/main", "repo:org/app:ref:refs/heads/main"));
        assert!(matches("v?", "v1"));
        assert!(!matches("v?", "v10"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("", "a"));
        assert!(matches("", ""));
        // Many stars against a long non-matching name stays fast (no backtracking).
        let long = "a".repeat(5000);
        assert!(!matches(&"*a".repeat(50), &(long + "/b")));
    }
}
