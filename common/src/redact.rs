//! Credentials out of SQL text that is shown (logs, errors, reports). The binlog holds
//! statements as they were typed, `CREATE USER ... IDENTIFIED BY '<password>'` included, and a
//! captured table's DDL may carry a `CONNECTION='mysql://user:password@host/...'` string.
//!
//! [`redact`] replaces, with `'<redacted>'`, every string literal that is a credential:
//!
//! - one after `PASSWORD` (`PASSWORD 'x'`, `PASSWORD('x')`, `PASSWORD = 'x'`, also as in
//!   `MASTER_PASSWORD`), or after `BY`, `AS` or `USING` in an `IDENTIFIED` clause
//!   (`IDENTIFIED BY 'x'`, `IDENTIFIED VIA ed25519 USING PASSWORD('x')`, `IDENTIFIED WITH
//!   plugin AS 'x'`);
//! - the password part of a URL (`scheme://user:<redacted>@host`) in any string literal.
//!
//! Only for display: the statements the pipeline carries are never changed.

use std::borrow::Cow;

const REDACTED: &str = "<redacted>";

/// `sql` with its credentials replaced (see the module note).
pub fn redact(sql: &str) -> Cow<'_, str> {
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    // (start, end) byte ranges of literal contents to replace, and the replacement.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    // The last two words (upper-cased) before the current token, and whether an IDENTIFIED
    // clause is open.
    let mut prev: [String; 2] = [String::new(), String::new()];
    let mut identified = false;
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c.is_whitespace() || c == '=' || c == '(' {
            i += 1;
        } else if c == '/' && chars.get(i + 1).map(|x| x.1) == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i].1 == '*' && chars[i + 1].1 == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' || c == '"' {
            // A string literal: from the opening quote to its closing one.
            let start = at + c.len_utf8();
            let mut j = i + 1;
            while j < chars.len() {
                let x = chars[j].1;
                if x == '\\' {
                    j += 2;
                    continue;
                }
                if x == c {
                    if chars.get(j + 1).map(|y| y.1) == Some(c) {
                        j += 2;
                        continue;
                    }
                    break;
                }
                j += 1;
            }
            let end = chars.get(j).map_or(sql.len(), |x| x.0);
            let credential = prev[1].ends_with("PASSWORD")
                || (identified && matches!(prev[1].as_str(), "BY" | "AS" | "USING"));
            if credential {
                edits.push((start, end, REDACTED.to_owned()));
            } else if let Some(url) = url_without_password(&sql[start..end]) {
                edits.push((start, end, url));
            }
            i = j + 1;
            prev = [prev[1].clone(), String::from("'")];
        } else if c.is_alphanumeric() || c == '_' || c == '`' {
            let quoted = c == '`';
            let start = i;
            i += 1;
            while i < chars.len()
                && if quoted {
                    chars[i].1 != '`'
                } else {
                    chars[i].1.is_alphanumeric() || chars[i].1 == '_'
                }
            {
                i += 1;
            }
            if quoted {
                i += 1;
            }
            let word: String = chars[start..i.min(chars.len())]
                .iter()
                .map(|x| x.1)
                .collect::<String>()
                .to_ascii_uppercase();
            match word.as_str() {
                "IDENTIFIED" => identified = true,
                // The next user of a CREATE USER list, or the next clause of ALTER USER.
                "REQUIRE" | "WITH" if prev[1] != "IDENTIFIED" => identified = false,
                _ => {}
            }
            prev = [prev[1].clone(), word];
        } else {
            if c == ',' || c == ';' {
                identified = false;
            }
            prev = [prev[1].clone(), c.to_string()];
            i += 1;
        }
    }
    if edits.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for (start, end, with) in edits {
        out.push_str(&sql[last..start]);
        out.push_str(&with);
        last = end;
    }
    out.push_str(&sql[last..]);
    Cow::Owned(out)
}

/// `scheme://user:password@rest` with the password redacted, if `s` holds such a URL.
fn url_without_password(s: &str) -> Option<String> {
    let scheme_end = s.find("://")? + 3;
    let at = scheme_end + s[scheme_end..].find('@')?;
    let colon = scheme_end + s[scheme_end..at].find(':')?;
    Some(format!("{}{REDACTED}{}", &s[..colon + 1], &s[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_account_statements_are_redacted() {
        for (sql, want) in [
            (
                "CREATE USER 'u'@'localhost' IDENTIFIED BY 'pw'",
                "CREATE USER 'u'@'localhost' IDENTIFIED BY '<redacted>'",
            ),
            (
                "create user u identified by password '*ABC'",
                "create user u identified by password '<redacted>'",
            ),
            (
                "CREATE USER a IDENTIFIED BY 'x', b IDENTIFIED BY \"y\"",
                "CREATE USER a IDENTIFIED BY '<redacted>', b IDENTIFIED BY \"<redacted>\"",
            ),
            (
                "ALTER USER u IDENTIFIED VIA ed25519 USING PASSWORD('pw') OR unix_socket",
                "ALTER USER u IDENTIFIED VIA ed25519 USING PASSWORD('<redacted>') OR unix_socket",
            ),
            (
                "CREATE USER u IDENTIFIED WITH mysql_native_password AS '*94BDCEBE'",
                "CREATE USER u IDENTIFIED WITH mysql_native_password AS '<redacted>'",
            ),
            (
                "SET PASSWORD FOR 'u'@'%' = PASSWORD('pw')",
                "SET PASSWORD FOR 'u'@'%' = PASSWORD('<redacted>')",
            ),
            (
                "GRANT ALL ON *.* TO u IDENTIFIED BY 'it''s \\' secret'",
                "GRANT ALL ON *.* TO u IDENTIFIED BY '<redacted>'",
            ),
            (
                "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'r', PASSWORD 'pw', HOST 'h')",
                "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'r', PASSWORD '<redacted>', HOST 'h')",
            ),
            (
                "CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD='pw'",
                "CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD='<redacted>'",
            ),
        ] {
            assert_eq!(redact(sql), want, "{sql}");
        }
    }

    #[test]
    fn urls_lose_their_password_and_other_literals_stay() {
        assert_eq!(
            redact("CREATE TABLE f (id INT) CONNECTION='mysql://app:pw@h:3306/d/t'"),
            "CREATE TABLE f (id INT) CONNECTION='mysql://app:<redacted>@h:3306/d/t'"
        );
        for plain in [
            "ALTER TABLE t ADD COLUMN c VARCHAR(10) DEFAULT 'by'",
            "CREATE TABLE t (id INT) COMMENT 'identified by nothing'",
            "CREATE USER u@localhost",
            "INSERT INTO t VALUES ('as', 'using')",
            "CREATE TABLE p (password VARCHAR(10) DEFAULT 'x')",
        ] {
            let got = redact(plain);
            assert!(
                matches!(got, Cow::Borrowed(_)) || got == plain,
                "{plain} -> {got}"
            );
        }
    }
}
