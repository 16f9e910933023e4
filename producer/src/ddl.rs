//! Classifies a DDL statement from the binlog: which tables or which database it changes, so the
//! producer writes a schema-change record exactly for DDL on captured tables.
//!
//! Replicated: `CREATE`/`ALTER`/`DROP`/`TRUNCATE`/`RENAME TABLE`, `CREATE`/`DROP INDEX`, and
//! `CREATE`/`ALTER`/`DROP DATABASE`. Not replicated (documented): temporary tables, views,
//! routines, triggers, events, users, roles and grants.

/// What a statement changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DdlTarget {
    /// Tables, each with its database if the statement names one.
    Tables(Vec<(Option<String>, String)>),
    Database(String),
    /// Not a replicated statement; the reason is for logs.
    NotReplicated(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Ident(String),
    Sym(char),
}

fn tokens(sql: &str, limit: usize) -> Vec<Tok> {
    let mut out = Vec::new();
    let b: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < b.len() && out.len() < limit {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '-' && b.get(i + 1) == Some(&'-') || c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '`' {
            let mut s = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == '`' {
                    if b.get(i + 1) == Some(&'`') {
                        s.push('`');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            out.push(Tok::Ident(s));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut s = String::new();
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '$') {
                s.push(b[i]);
                i += 1;
            }
            out.push(Tok::Word(s));
        } else {
            out.push(Tok::Sym(c));
            i += 1;
        }
    }
    out
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn kw(&mut self, w: &str) -> bool {
        if let Some(Tok::Word(x)) = self.t.get(self.i) {
            if x.eq_ignore_ascii_case(w) {
                self.i += 1;
                return true;
            }
        }
        false
    }

    fn sym(&mut self, c: char) -> bool {
        if self.t.get(self.i) == Some(&Tok::Sym(c)) {
            self.i += 1;
            return true;
        }
        false
    }

    fn ident(&mut self) -> Option<String> {
        match self.t.get(self.i) {
            Some(Tok::Word(w) | Tok::Ident(w)) => {
                self.i += 1;
                Some(w.clone())
            }
            _ => None,
        }
    }

    /// `name` or `db.name`.
    fn qualified(&mut self) -> Option<(Option<String>, String)> {
        let a = self.ident()?;
        if self.sym('.') {
            let b = self.ident()?;
            Some((Some(a), b))
        } else {
            Some((None, a))
        }
    }

    fn if_exists(&mut self) {
        let save = self.i;
        if self.kw("IF") && (self.kw("EXISTS") || (self.kw("NOT") && self.kw("EXISTS"))) {
            return;
        }
        self.i = save;
    }
}

pub fn classify(sql: &str) -> DdlTarget {
    let mut p = P {
        t: tokens(sql, 4096),
        i: 0,
    };
    use DdlTarget::*;
    if p.kw("CREATE") {
        if p.kw("OR") && !p.kw("REPLACE") {
            return NotReplicated("unrecognised CREATE");
        }
        if p.kw("TEMPORARY") {
            return NotReplicated("temporary table");
        }
        if p.kw("TABLE") {
            p.if_exists();
            return p
                .qualified()
                .map(|t| Tables(vec![t]))
                .unwrap_or(NotReplicated("unreadable CREATE TABLE"));
        }
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            p.if_exists();
            return p
                .ident()
                .map(Database)
                .unwrap_or(NotReplicated("unreadable CREATE DATABASE"));
        }
        let _ = p.kw("UNIQUE") || p.kw("FULLTEXT") || p.kw("SPATIAL");
        if p.kw("INDEX") {
            p.if_exists();
            p.ident();
            if p.kw("ON") {
                return p
                    .qualified()
                    .map(|t| Tables(vec![t]))
                    .unwrap_or(NotReplicated("unreadable CREATE INDEX"));
            }
        }
        return NotReplicated("not a table or database statement");
    }
    if p.kw("ALTER") {
        let _ = p.kw("ONLINE");
        let _ = p.kw("IGNORE");
        if p.kw("TABLE") {
            p.if_exists();
            return p
                .qualified()
                .map(|t| Tables(vec![t]))
                .unwrap_or(NotReplicated("unreadable ALTER TABLE"));
        }
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            return p
                .ident()
                .map(Database)
                .unwrap_or(NotReplicated("ALTER DATABASE without a name"));
        }
        return NotReplicated("not a table or database statement");
    }
    if p.kw("DROP") {
        if p.kw("TEMPORARY") {
            return NotReplicated("temporary table");
        }
        if p.kw("TABLE") || p.kw("TABLES") {
            p.if_exists();
            let mut v = Vec::new();
            while let Some(t) = p.qualified() {
                v.push(t);
                if !p.sym(',') {
                    break;
                }
            }
            return if v.is_empty() {
                NotReplicated("unreadable DROP TABLE")
            } else {
                Tables(v)
            };
        }
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            p.if_exists();
            return p
                .ident()
                .map(Database)
                .unwrap_or(NotReplicated("unreadable DROP DATABASE"));
        }
        if p.kw("INDEX") {
            p.if_exists();
            p.ident();
            if p.kw("ON") {
                return p
                    .qualified()
                    .map(|t| Tables(vec![t]))
                    .unwrap_or(NotReplicated("unreadable DROP INDEX"));
            }
        }
        return NotReplicated("not a table or database statement");
    }
    if p.kw("TRUNCATE") {
        let _ = p.kw("TABLE");
        return p
            .qualified()
            .map(|t| Tables(vec![t]))
            .unwrap_or(NotReplicated("unreadable TRUNCATE"));
    }
    if p.kw("RENAME") {
        if !(p.kw("TABLE") || p.kw("TABLES")) {
            return NotReplicated("RENAME USER");
        }
        let mut v = Vec::new();
        while let Some(a) = p.qualified() {
            v.push(a);
            if !p.kw("TO") {
                break;
            }
            let Some(b) = p.qualified() else { break };
            v.push(b);
            if !p.sym(',') {
                break;
            }
        }
        return if v.is_empty() {
            NotReplicated("unreadable RENAME TABLE")
        } else {
            Tables(v)
        };
    }
    NotReplicated("not DDL on tables or databases")
}

#[cfg(test)]
mod tests {
    use super::*;
    use DdlTarget::*;

    fn t(db: Option<&str>, name: &str) -> (Option<String>, String) {
        (db.map(str::to_owned), name.to_owned())
    }

    #[test]
    fn table_statements() {
        assert_eq!(
            classify("CREATE TABLE t (id int primary key)"),
            Tables(vec![t(None, "t")])
        );
        assert_eq!(
            classify("create table if not exists `shop`.`my t` (x int)"),
            Tables(vec![t(Some("shop"), "my t")])
        );
        assert_eq!(
            classify("CREATE OR REPLACE TABLE a.b (x int)"),
            Tables(vec![t(Some("a"), "b")])
        );
        assert_eq!(
            classify("/* x */ ALTER TABLE t ADD COLUMN c INT"),
            Tables(vec![t(None, "t")])
        );
        assert_eq!(
            classify("ALTER ONLINE IGNORE TABLE d.t ENGINE=InnoDB"),
            Tables(vec![t(Some("d"), "t")])
        );
        assert_eq!(
            classify("DROP TABLE IF EXISTS `a`, b.c /* generated by server */"),
            Tables(vec![t(None, "a"), t(Some("b"), "c")])
        );
        assert_eq!(classify("TRUNCATE TABLE x"), Tables(vec![t(None, "x")]));
        assert_eq!(classify("truncate y"), Tables(vec![t(None, "y")]));
        assert_eq!(
            classify("RENAME TABLE a TO b, d.c TO e.f"),
            Tables(vec![
                t(None, "a"),
                t(None, "b"),
                t(Some("d"), "c"),
                t(Some("e"), "f")
            ])
        );
        assert_eq!(
            classify("CREATE UNIQUE INDEX i ON s.t (x)"),
            Tables(vec![t(Some("s"), "t")])
        );
        assert_eq!(classify("DROP INDEX i ON t"), Tables(vec![t(None, "t")]));
        assert_eq!(
            classify("CREATE TABLE `we``ird` (x int)"),
            Tables(vec![t(None, "we`ird")])
        );
    }

    #[test]
    fn database_statements() {
        assert_eq!(
            classify("CREATE DATABASE IF NOT EXISTS shop"),
            Database("shop".into())
        );
        assert_eq!(classify("DROP SCHEMA `shop`"), Database("shop".into()));
    }

    #[test]
    fn other_statements_are_not_replicated() {
        for s in [
            "CREATE TEMPORARY TABLE t (x int)",
            "DROP TEMPORARY TABLE IF EXISTS t",
            "CREATE USER 'a'@'%'",
            "GRANT SELECT ON *.* TO 'a'@'%'",
            "CREATE VIEW v AS SELECT 1",
            "FLUSH PRIVILEGES",
            "RENAME USER a TO b",
        ] {
            assert!(matches!(classify(s), NotReplicated(_)), "{s}");
        }
    }
}
