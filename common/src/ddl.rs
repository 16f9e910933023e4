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
            let (s, next) = quoted(&b, i, true);
            out.push(Tok::Str(s));
            i = next;
        } else if c == '`' {
            let (s, next) = quoted(&b, i, false);
            out.push(Tok::Ident(s));
            i = next;
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

/// The text quoted from `b[start]` (the quote) to its closing quote, and the index after it. A
/// doubled quote stands for itself; in string literals (`backslash`) `\x` stands for `x`.
fn quoted(b: &[char], start: usize, backslash: bool) -> (String, usize) {
    let q = b[start];
    let mut s = String::new();
    let mut i = start + 1;
    while i < b.len() {
        if backslash && b[i] == '\\' && i + 1 < b.len() {
            s.push(b[i + 1]);
            i += 2;
        } else if b[i] == q && b.get(i + 1) == Some(&q) {
            s.push(q);
            i += 2;
        } else if b[i] == q {
            return (s, i + 1);
        } else {
            s.push(b[i]);
            i += 1;
        }
    }
    (s, i)
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

    /// Takes the first of `words` that comes next, if any.
    fn any_kw(&mut self, words: &[&str]) -> bool {
        words.iter().any(|w| self.kw(w))
    }

    /// `a TO b`: the old and the new name.
    fn renamed(&mut self) -> Option<(String, String)> {
        let a = self.ident()?;
        self.kw("TO").then_some(())?;
        Some((a, self.ident()?))
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

impl P {
    /// `[IF [NOT] EXISTS] [db.]table`: the one table a statement names, or `unreadable`.
    fn one_table(&mut self, unreadable: &'static str) -> DdlTarget {
        self.if_exists();
        self.qualified()
            .map(|t| DdlTarget::Tables(vec![t]))
            .unwrap_or(DdlTarget::NotReplicated(unreadable))
    }

    /// `[IF [NOT] EXISTS] name`: the database a statement names, or `unreadable`.
    fn database(&mut self, unreadable: &'static str) -> DdlTarget {
        self.if_exists();
        self.ident()
            .map(DdlTarget::Database)
            .unwrap_or(DdlTarget::NotReplicated(unreadable))
    }

    /// `INDEX [IF [NOT] EXISTS] name ON [db.]table` after CREATE or DROP: the table.
    fn index_on(&mut self, unreadable: &'static str) -> Option<DdlTarget> {
        if !self.kw("INDEX") {
            return None;
        }
        self.if_exists();
        self.ident();
        self.kw("ON").then(|| self.one_table(unreadable))
    }

    /// The same, read whole: the index's name and its table.
    #[allow(clippy::type_complexity)]
    fn named_index_on(&mut self) -> Option<(String, (Option<String>, String))> {
        if !self.kw("INDEX") {
            return None;
        }
        self.if_exists();
        let index = self.ident()?;
        self.kw("ON").then_some(())?;
        Some((index, self.qualified()?))
    }

    /// A list of tables: `a, b` (DROP TABLE), or with `pairs`, `a TO b, c TO d` (RENAME TABLE).
    fn table_list(&mut self, pairs: bool, unreadable: &'static str) -> DdlTarget {
        let mut v = Vec::new();
        while let Some(a) = self.qualified() {
            v.push(a);
            if pairs {
                if !self.kw("TO") {
                    break;
                }
                let Some(b) = self.qualified() else { break };
                v.push(b);
            }
            if !self.sym(',') {
                break;
            }
        }
        if v.is_empty() {
            DdlTarget::NotReplicated(unreadable)
        } else {
            DdlTarget::Tables(v)
        }
    }
}

pub fn classify(sql: &str) -> DdlTarget {
    let mut p = P {
        t: tokens(sql, 4096),
        i: 0,
    };
    use DdlTarget::*;
    const OTHER: DdlTarget = NotReplicated("not a table or database statement");
    if p.kw("CREATE") {
        if p.kw("OR") && !p.kw("REPLACE") {
            return NotReplicated("unrecognised CREATE");
        }
        if p.kw("TEMPORARY") {
            return NotReplicated("temporary table");
        }
        if p.kw("TABLE") {
            return p.one_table("unreadable CREATE TABLE");
        }
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            return p.database("unreadable CREATE DATABASE");
        }
        let _ = p.kw("UNIQUE") || p.kw("FULLTEXT") || p.kw("SPATIAL");
        return p.index_on("unreadable CREATE INDEX").unwrap_or(OTHER);
    }
    if p.kw("ALTER") {
        let _ = p.kw("ONLINE");
        let _ = p.kw("IGNORE");
        if p.kw("TABLE") {
            return p.one_table("unreadable ALTER TABLE");
        }
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            return p.database("ALTER DATABASE without a name");
        }
        return OTHER;
    }
    if p.kw("DROP") {
        if p.kw("TEMPORARY") {
            return NotReplicated("temporary table");
        }
        if p.kw("TABLE") || p.kw("TABLES") {
            p.if_exists();
            return p.table_list(false, "unreadable DROP TABLE");
        }
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            return p.database("unreadable DROP DATABASE");
        }
        return p.index_on("unreadable DROP INDEX").unwrap_or(OTHER);
    }
    if p.kw("TRUNCATE") {
        let _ = p.kw("TABLE");
        return p.one_table("unreadable TRUNCATE");
    }
    if p.kw("RENAME") {
        if !(p.kw("TABLE") || p.kw("TABLES")) {
            return NotReplicated("RENAME USER");
        }
        return p.table_list(true, "unreadable RENAME TABLE");
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
        let (index, table) = p.named_index_on()?;
        let (d, t) = name(table);
        return Some(vec![IndexExists(d, t, index)]);
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
        let (index, table) = p.named_index_on()?;
        let (d, t) = name(table);
        return Some(vec![IndexAbsent(d, t, index)]);
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
                } else if p.any_kw(&["CONSTRAINT", "CHECK", "PARTITION", "PERIOD", "SYSTEM"]) {
                    return None;
                } else {
                    let _ = p.kw("COLUMN");
                    p.if_exists();
                    v.push(ColumnAbsent(d.clone(), t.clone(), p.ident()?));
                }
            } else if p.kw("RENAME") {
                if p.kw("COLUMN") {
                    let (a, b) = p.renamed()?;
                    v.push(ColumnAbsent(d.clone(), t.clone(), a));
                    v.push(ColumnExists(d.clone(), t.clone(), b));
                } else if p.kw("INDEX") || p.kw("KEY") {
                    let (a, b) = p.renamed()?;
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
            } else if p.any_kw(&[
                "PARTITION",
                "REMOVE",
                "DISCARD",
                "IMPORT",
                "COALESCE",
                "REORGANIZE",
                "EXCHANGE",
                "TRUNCATE",
                "CONVERT",
            ]) {
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

    /// The tables `classify` found, in short: `a, b.c` (no database where the statement names none).
    fn tables(sql: &str) -> String {
        match classify(sql) {
            Tables(v) => v
                .iter()
                .map(|(d, t)| d.as_ref().map_or(t.clone(), |d| format!("{d}.{t}")))
                .collect::<Vec<_>>()
                .join(", "),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn table_statements() {
        for (sql, want) in [
            ("CREATE TABLE t (id int primary key)", "t"),
            (
                "create table if not exists `shop`.`my t` (x int)",
                "shop.my t",
            ),
            ("CREATE OR REPLACE TABLE a.b (x int)", "a.b"),
            ("/* x */ ALTER TABLE t ADD COLUMN c INT", "t"),
            ("ALTER ONLINE IGNORE TABLE d.t ENGINE=InnoDB", "d.t"),
            (
                "DROP TABLE IF EXISTS `a`, b.c /* generated by server */",
                "a, b.c",
            ),
            ("TRUNCATE TABLE x", "x"),
            ("truncate y", "y"),
            ("RENAME TABLE a TO b, d.c TO e.f", "a, b, d.c, e.f"),
            ("CREATE UNIQUE INDEX i ON s.t (x)", "s.t"),
            ("DROP INDEX i ON t", "t"),
            ("CREATE TABLE `we``ird` (x int)", "we`ird"),
        ] {
            assert_eq!(tables(sql), want, "{sql}");
        }
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

    /// An effect in short: `+table d.t`, `-column d.t.c`, `+index d.t.i`, `-database z`...
    fn short(e: &Effect) -> String {
        use Effect::*;
        let (sign, kind, name) = match e {
            DatabaseExists(d) => ('+', "database", d.clone()),
            DatabaseAbsent(d) => ('-', "database", d.clone()),
            TableExists(d, t) => ('+', "table", format!("{d}.{t}")),
            TableAbsent(d, t) => ('-', "table", format!("{d}.{t}")),
            ColumnExists(d, t, c) => ('+', "column", format!("{d}.{t}.{c}")),
            ColumnAbsent(d, t, c) => ('-', "column", format!("{d}.{t}.{c}")),
            IndexExists(d, t, i) => ('+', "index", format!("{d}.{t}.{i}")),
            IndexAbsent(d, t, i) => ('-', "index", format!("{d}.{t}.{i}")),
            ForeignKeyExists(d, t, f) => ('+', "fk", format!("{d}.{t}.{f}")),
            ForeignKeyAbsent(d, t, f) => ('-', "fk", format!("{d}.{t}.{f}")),
        };
        format!("{sign}{kind} {name}")
    }

    #[test]
    fn effects_of_the_statements_the_pipeline_replicates() {
        // (statement run in database `d`, its effects in order; None: not readable from the
        // statement alone)
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("CREATE TABLE IF NOT EXISTS t (id INT)", Some(&["+table d.t"])),
            ("CREATE TABLE x.t2 SELECT * FROM t", Some(&["+table x.t2"])),
            ("DROP TABLE IF EXISTS a, x.b", Some(&["-table d.a", "-table x.b"])),
            (
                "RENAME TABLE `a` TO `b`, x.c TO x.e",
                Some(&["-table d.a", "+table d.b", "-table x.c", "+table x.e"]),
            ),
            // A chain: b holds what the last step left (it is gone again).
            (
                "RENAME TABLE a TO b, b TO c",
                Some(&["-table d.a", "-table d.b", "+table d.c"]),
            ),
            (
                "ALTER TABLE t ADD COLUMN c BIGINT UNSIGNED NULL DEFAULT 'a,b' COMMENT 'x, y', ADD INDEX i (c)",
                Some(&["+column d.t.c", "+index d.t.i"]),
            ),
            (
                "ALTER TABLE t DROP COLUMN c, MODIFY COLUMN v VARCHAR(56) NULL",
                Some(&["-column d.t.c", "+column d.t.v"]),
            ),
            (
                "ALTER TABLE t RENAME COLUMN a TO b",
                Some(&["-column d.t.a", "+column d.t.b"]),
            ),
            (
                "ALTER TABLE t CHANGE a b INT NOT NULL",
                Some(&["-column d.t.a", "+column d.t.b"]),
            ),
            ("ALTER TABLE t CHANGE COLUMN a a BIGINT", Some(&["+column d.t.a"])),
            (
                "ALTER TABLE t ADD COLUMN c INT, RENAME TO u",
                Some(&["+column d.u.c", "-table d.t", "+table d.u"]),
            ),
            ("ALTER TABLE t ENGINE=InnoDB, ALGORITHM=COPY", Some(&[])),
            ("CREATE UNIQUE INDEX i ON x.t (a)", Some(&["+index x.t.i"])),
            ("DROP INDEX i ON t", Some(&["-index d.t.i"])),
            ("CREATE DATABASE IF NOT EXISTS z", Some(&["+database z"])),
            ("DROP SCHEMA z", Some(&["-database z"])),
            // What cannot be read from the statement alone.
            ("ALTER TABLE t ADD INDEX (c)", None), // an unnamed index
            ("ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES p(id)", None),
            (
                "ALTER TABLE t ADD PARTITION (PARTITION p1 VALUES LESS THAN (10))",
                None,
            ),
            ("TRUNCATE TABLE t", None),
        ];
        for (sql, want) in cases {
            let got = effects(sql, "d").map(|es| es.iter().map(short).collect::<Vec<_>>());
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{sql}");
        }
    }
}
