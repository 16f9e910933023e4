//! Reads DDL statements as MariaDB writes them to the binlog, in the two ways the pipeline needs:
//!
//! - [`classify`]: which tables or which database a statement changes, so the producer writes a
//!   schema-change record exactly for DDL on captured tables. Replicated: `CREATE`/`ALTER`/
//!   `DROP`/`TRUNCATE`/`RENAME TABLE`, `CREATE`/`DROP INDEX`, and `CREATE`/`ALTER`/`DROP
//!   DATABASE`. Not replicated (documented): temporary tables, views, routines, triggers, events,
//!   users, roles and grants.
//! - [`effects`]: what a statement leaves in the schema once it ran (this table exists, that
//!   column is gone, ...), so apply can tell from the replica's schema whether a schema change it
//!   runs again after a crash already took effect. A statement whose effects cannot all be read
//!   (an unnamed index, a clause it does not know) gives `None`: apply then never assumes it ran.

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
    Str(String),
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
        } else if c == '\'' || c == '"' {
            // A string literal ('...' or "..."): one token, never split at its commas.
            let mut s = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == '\\' && i + 1 < b.len() {
                    s.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        s.push(c);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            out.push(Tok::Str(s));
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

/// Something a schema change leaves in the schema once it ran. Names are as the statement
/// writes them; a table's database is the statement's own if it names one, else the session's
/// default database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    DatabaseExists(String),
    DatabaseAbsent(String),
    TableExists(String, String),
    TableAbsent(String, String),
    /// (database, table, column)
    ColumnExists(String, String, String),
    ColumnAbsent(String, String, String),
    /// (database, table, index); the primary key is the index `PRIMARY`.
    IndexExists(String, String, String),
    IndexAbsent(String, String, String),
    /// (database, table, constraint name)
    ForeignKeyExists(String, String, String),
    ForeignKeyAbsent(String, String, String),
}

impl P {
    fn peek_kw(&self, w: &str) -> bool {
        matches!(self.t.get(self.i), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn done(&self) -> bool {
        self.i >= self.t.len()
    }

    /// Skips to the next top-level comma (not consumed) or the end; returns whether a comma
    /// follows.
    fn skip_clause(&mut self) -> bool {
        let mut depth = 0usize;
        while let Some(t) = self.t.get(self.i) {
            match t {
                Tok::Sym('(') => depth += 1,
                Tok::Sym(')') => depth = depth.saturating_sub(1),
                Tok::Sym(',') if depth == 0 => return true,
                _ => {}
            }
            self.i += 1;
        }
        false
    }

    /// `(a, b, ...)` of column definitions: the name of each.
    fn column_list(&mut self) -> Option<Vec<String>> {
        if !self.sym('(') {
            return None;
        }
        let mut out = Vec::new();
        loop {
            out.push(self.ident()?);
            let mut depth = 0usize;
            loop {
                match self.t.get(self.i)? {
                    Tok::Sym('(') => depth += 1,
                    Tok::Sym(')') if depth == 0 => {
                        self.i += 1;
                        return Some(out);
                    }
                    Tok::Sym(')') => depth -= 1,
                    Tok::Sym(',') if depth == 0 => {
                        self.i += 1;
                        break;
                    }
                    _ => {}
                }
                self.i += 1;
            }
        }
    }

    fn if_not_exists(&mut self) {
        let save = self.i;
        if self.kw("IF") && self.kw("NOT") && self.kw("EXISTS") {
            return;
        }
        self.i = save;
    }
}

/// What `sql` leaves in the schema once it ran, or `None` if that cannot be read from the
/// statement alone. `default_db` is the database the statement ran in.
pub fn effects(sql: &str, default_db: &str) -> Option<Vec<Effect>> {
    use Effect::*;
    let mut p = P {
        t: tokens(sql, usize::MAX),
        i: 0,
    };
    let name = |q: (Option<String>, String)| (q.0.unwrap_or_else(|| default_db.to_owned()), q.1);
    if p.kw("CREATE") {
        if p.kw("OR") && !p.kw("REPLACE") {
            return None;
        }
        if p.kw("TABLE") {
            p.if_not_exists();
            let (d, t) = name(p.qualified()?);
            return Some(vec![TableExists(d, t)]);
        }
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            p.if_not_exists();
            return Some(vec![DatabaseExists(p.ident()?)]);
        }
        let unique = p.kw("UNIQUE") || p.kw("FULLTEXT") || p.kw("SPATIAL");
        let _ = unique;
        if p.kw("INDEX") {
            p.if_not_exists();
            let index = p.ident()?;
            if !p.kw("ON") {
                return None;
            }
            let (d, t) = name(p.qualified()?);
            return Some(vec![IndexExists(d, t, index)]);
        }
        return None;
    }
    if p.kw("DROP") {
        if p.kw("TABLE") || p.kw("TABLES") {
            p.if_exists();
            let mut v = Vec::new();
            loop {
                let (d, t) = name(p.qualified()?);
                v.push(TableAbsent(d, t));
                if !p.sym(',') {
                    break;
                }
            }
            return Some(v);
        }
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            p.if_exists();
            return Some(vec![DatabaseAbsent(p.ident()?)]);
        }
        if p.kw("INDEX") {
            p.if_exists();
            let index = p.ident()?;
            if !p.kw("ON") {
                return None;
            }
            let (d, t) = name(p.qualified()?);
            return Some(vec![IndexAbsent(d, t, index)]);
        }
        return None;
    }
    if p.kw("RENAME") {
        if !(p.kw("TABLE") || p.kw("TABLES")) {
            return None;
        }
        let mut v = Vec::new();
        loop {
            let (da, a) = name(p.qualified()?);
            if !p.kw("TO") {
                return None;
            }
            let (db, b) = name(p.qualified()?);
            v.push(TableAbsent(da, a));
            v.push(TableExists(db, b));
            if !p.sym(',') {
                break;
            }
        }
        // In a chain (a TO b, b TO c) a name that reappears holds what the last step left.
        let mut out: Vec<Effect> = Vec::new();
        for e in v {
            let key = match &e {
                TableAbsent(d, t) | TableExists(d, t) => (d.clone(), t.clone()),
                _ => unreachable!(),
            };
            out.retain(|x| !matches!(x, TableAbsent(d, t) | TableExists(d, t) if (d, t) == (&key.0, &key.1)));
            out.push(e);
        }
        return Some(out);
    }
    if p.kw("ALTER") {
        let _ = p.kw("ONLINE");
        let _ = p.kw("IGNORE");
        if !p.kw("TABLE") {
            return None;
        }
        p.if_exists();
        let (mut d, mut t) = name(p.qualified()?);
        let mut v = Vec::new();
        while !p.done() {
            let start = p.i;
            if p.kw("ADD") {
                if p.kw("CONSTRAINT") {
                    let c = p.ident()?;
                    if p.kw("FOREIGN") {
                        v.push(ForeignKeyExists(d.clone(), t.clone(), c));
                    } else if p.kw("PRIMARY") {
                        v.push(IndexExists(d.clone(), t.clone(), "PRIMARY".into()));
                    } else if p.kw("UNIQUE") {
                        let _ = p.kw("INDEX") || p.kw("KEY");
                        v.push(IndexExists(d.clone(), t.clone(), p.ident().unwrap_or(c)));
                    } else {
                        return None; // CHECK constraints and the like
                    }
                } else if p.kw("PRIMARY") {
                    v.push(IndexExists(d.clone(), t.clone(), "PRIMARY".into()));
                } else if p.kw("FOREIGN") {
                    let _ = p.kw("KEY");
                    p.if_not_exists();
                    if p.peek_kw("REFERENCES") || p.t.get(p.i) == Some(&Tok::Sym('(')) {
                        return None; // unnamed: MariaDB names it
                    }
                    v.push(ForeignKeyExists(d.clone(), t.clone(), p.ident()?));
                } else if p.kw("UNIQUE")
                    || p.kw("FULLTEXT")
                    || p.kw("SPATIAL")
                    || p.peek_kw("INDEX")
                    || p.peek_kw("KEY")
                {
                    let _ = p.kw("INDEX") || p.kw("KEY");
                    p.if_not_exists();
                    if p.t.get(p.i) == Some(&Tok::Sym('(')) {
                        return None; // unnamed: MariaDB names it
                    }
                    v.push(IndexExists(d.clone(), t.clone(), p.ident()?));
                } else if p.kw("PERIOD") || p.kw("PARTITION") || p.kw("CHECK") || p.kw("SYSTEM") {
                    return None;
                } else {
                    let _ = p.kw("COLUMN");
                    p.if_not_exists();
                    if p.t.get(p.i) == Some(&Tok::Sym('(')) {
                        for c in p.column_list()? {
                            v.push(ColumnExists(d.clone(), t.clone(), c));
                        }
                    } else {
                        v.push(ColumnExists(d.clone(), t.clone(), p.ident()?));
                    }
                }
            } else if p.kw("DROP") {
                if p.kw("PRIMARY") {
                    v.push(IndexAbsent(d.clone(), t.clone(), "PRIMARY".into()));
                } else if p.kw("FOREIGN") {
                    let _ = p.kw("KEY");
                    p.if_exists();
                    v.push(ForeignKeyAbsent(d.clone(), t.clone(), p.ident()?));
                } else if p.kw("INDEX") || p.kw("KEY") {
                    p.if_exists();
                    v.push(IndexAbsent(d.clone(), t.clone(), p.ident()?));
                } else if p.kw("CONSTRAINT")
                    || p.kw("CHECK")
                    || p.kw("PARTITION")
                    || p.kw("PERIOD")
                    || p.kw("SYSTEM")
                {
                    return None;
                } else {
                    let _ = p.kw("COLUMN");
                    p.if_exists();
                    v.push(ColumnAbsent(d.clone(), t.clone(), p.ident()?));
                }
            } else if p.kw("RENAME") {
                if p.kw("COLUMN") {
                    let a = p.ident()?;
                    if !p.kw("TO") {
                        return None;
                    }
                    let b = p.ident()?;
                    v.push(ColumnAbsent(d.clone(), t.clone(), a));
                    v.push(ColumnExists(d.clone(), t.clone(), b));
                } else if p.kw("INDEX") || p.kw("KEY") {
                    let a = p.ident()?;
                    if !p.kw("TO") {
                        return None;
                    }
                    let b = p.ident()?;
                    v.push(IndexAbsent(d.clone(), t.clone(), a));
                    v.push(IndexExists(d.clone(), t.clone(), b));
                } else {
                    let _ = p.kw("TO") || p.kw("AS");
                    let (nd, nt) = name(p.qualified()?);
                    // Effects so far now live under the new name.
                    for e in &mut v {
                        match e {
                            ColumnExists(a, b, _)
                            | ColumnAbsent(a, b, _)
                            | IndexExists(a, b, _)
                            | IndexAbsent(a, b, _)
                            | ForeignKeyExists(a, b, _)
                            | ForeignKeyAbsent(a, b, _)
                                if (a.as_str(), b.as_str()) == (d.as_str(), t.as_str()) =>
                            {
                                *a = nd.clone();
                                *b = nt.clone();
                            }
                            _ => {}
                        }
                    }
                    if (nd.as_str(), nt.as_str()) != (d.as_str(), t.as_str()) {
                        v.push(TableAbsent(d.clone(), t.clone()));
                        v.push(TableExists(nd.clone(), nt.clone()));
                    }
                    d = nd;
                    t = nt;
                }
            } else if p.kw("CHANGE") {
                let _ = p.kw("COLUMN");
                p.if_exists();
                let a = p.ident()?;
                let b = p.ident()?;
                if !a.eq_ignore_ascii_case(&b) {
                    v.push(ColumnAbsent(d.clone(), t.clone(), a));
                }
                v.push(ColumnExists(d.clone(), t.clone(), b));
            } else if p.kw("MODIFY") {
                let _ = p.kw("COLUMN");
                p.if_exists();
                v.push(ColumnExists(d.clone(), t.clone(), p.ident()?));
            } else if p.kw("PARTITION")
                || p.kw("REMOVE")
                || p.kw("DISCARD")
                || p.kw("IMPORT")
                || p.kw("COALESCE")
                || p.kw("REORGANIZE")
                || p.kw("EXCHANGE")
                || p.kw("TRUNCATE")
                || p.kw("CONVERT")
            {
                return None;
            }
            // Anything else is a table option (ENGINE=, COMMENT=, ALGORITHM=, ...), or the rest
            // of a column definition: no effect of its own to check.
            if p.i == start {
                p.i += 1;
            }
            if p.skip_clause() {
                p.sym(',');
            }
        }
        return Some(v);
    }
    None
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

    #[test]
    fn effects_of_the_statements_the_pipeline_replicates() {
        use Effect::*;
        let e = |sql: &str| effects(sql, "d");
        let s = |x: &str| x.to_owned();
        assert_eq!(
            e("CREATE TABLE IF NOT EXISTS t (id INT)"),
            Some(vec![TableExists(s("d"), s("t"))])
        );
        assert_eq!(
            e("CREATE TABLE x.t2 SELECT * FROM t"),
            Some(vec![TableExists(s("x"), s("t2"))])
        );
        assert_eq!(
            e("DROP TABLE IF EXISTS a, x.b"),
            Some(vec![
                TableAbsent(s("d"), s("a")),
                TableAbsent(s("x"), s("b"))
            ])
        );
        assert_eq!(
            e("RENAME TABLE `a` TO `b`, x.c TO x.e"),
            Some(vec![
                TableAbsent(s("d"), s("a")),
                TableExists(s("d"), s("b")),
                TableAbsent(s("x"), s("c")),
                TableExists(s("x"), s("e"))
            ])
        );
        // A chain: b holds what the last step left (it is gone again).
        assert_eq!(
            e("RENAME TABLE a TO b, b TO c"),
            Some(vec![
                TableAbsent(s("d"), s("a")),
                TableAbsent(s("d"), s("b")),
                TableExists(s("d"), s("c"))
            ])
        );
        assert_eq!(
            e("ALTER TABLE t ADD COLUMN c BIGINT UNSIGNED NULL DEFAULT 'a,b' COMMENT 'x, y', ADD INDEX i (c)"),
            Some(vec![
                ColumnExists(s("d"), s("t"), s("c")),
                IndexExists(s("d"), s("t"), s("i"))
            ])
        );
        assert_eq!(
            e("ALTER TABLE t DROP COLUMN c, MODIFY COLUMN v VARCHAR(56) NULL"),
            Some(vec![
                ColumnAbsent(s("d"), s("t"), s("c")),
                ColumnExists(s("d"), s("t"), s("v"))
            ])
        );
        assert_eq!(
            e("ALTER TABLE t RENAME COLUMN a TO b"),
            Some(vec![
                ColumnAbsent(s("d"), s("t"), s("a")),
                ColumnExists(s("d"), s("t"), s("b"))
            ])
        );
        assert_eq!(
            e("ALTER TABLE t CHANGE a b INT NOT NULL"),
            Some(vec![
                ColumnAbsent(s("d"), s("t"), s("a")),
                ColumnExists(s("d"), s("t"), s("b"))
            ])
        );
        assert_eq!(
            e("ALTER TABLE t CHANGE COLUMN a a BIGINT"),
            Some(vec![ColumnExists(s("d"), s("t"), s("a"))])
        );
        assert_eq!(
            e("ALTER TABLE t ADD COLUMN c INT, RENAME TO u"),
            Some(vec![
                ColumnExists(s("d"), s("u"), s("c")),
                TableAbsent(s("d"), s("t")),
                TableExists(s("d"), s("u"))
            ])
        );
        assert_eq!(
            e("ALTER TABLE t ENGINE=InnoDB, ALGORITHM=COPY"),
            Some(vec![])
        );
        assert_eq!(
            e("CREATE UNIQUE INDEX i ON x.t (a)"),
            Some(vec![IndexExists(s("x"), s("t"), s("i"))])
        );
        assert_eq!(
            e("DROP INDEX i ON t"),
            Some(vec![IndexAbsent(s("d"), s("t"), s("i"))])
        );
        assert_eq!(
            e("CREATE DATABASE IF NOT EXISTS z"),
            Some(vec![DatabaseExists(s("z"))])
        );
        assert_eq!(e("DROP SCHEMA z"), Some(vec![DatabaseAbsent(s("z"))]));
        // What cannot be read from the statement alone.
        assert_eq!(e("ALTER TABLE t ADD INDEX (c)"), None, "an unnamed index");
        assert_eq!(
            e("ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES p(id)"),
            None
        );
        assert_eq!(
            e("ALTER TABLE t ADD PARTITION (PARTITION p1 VALUES LESS THAN (10))"),
            None
        );
        assert_eq!(e("TRUNCATE TABLE t"), None);
    }
}
