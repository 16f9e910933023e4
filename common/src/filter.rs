//! Which tables are captured: `producer.include` and `producer.exclude` glob patterns on
//! `db.table` (`*` matches any run of characters, including dots), minus the system databases
//! and Continuum's own `continuum` schema, which are never captured. The producer captures by
//! these rules, and `orphans` lists by them what the producer would have captured.

use glob::Pattern;

use crate::config::ProducerConfig;
use crate::ddl::{classify, DdlTarget};
use crate::ConfigError;

/// Databases that are never captured.
pub const SYSTEM_DATABASES: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "continuum",
];

#[derive(Debug, Clone)]
pub struct TableFilter {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    /// Tables left out at start (no primary key, with `tables_without_primary_key = "exclude"`).
    extra_excluded: Vec<String>,
}

fn compile(list: &[String], setting: &str) -> Result<Vec<Pattern>, ConfigError> {
    list.iter()
        .map(|p| {
            if !p.contains('.') {
                return Err(ConfigError::Invalid {
                    setting: setting.into(),
                    reason: format!(
                        "pattern '{p}' must have the form db.table (use db.* for a whole database)"
                    ),
                });
            }
            Pattern::new(p).map_err(|e| ConfigError::Invalid {
                setting: setting.into(),
                reason: format!("pattern '{p}': {e}"),
            })
        })
        .collect()
}

impl TableFilter {
    pub fn new(cfg: &ProducerConfig) -> Result<Self, ConfigError> {
        Ok(TableFilter {
            include: compile(&cfg.include, "producer.include")?,
            exclude: compile(&cfg.exclude, "producer.exclude")?,
            extra_excluded: Vec::new(),
        })
    }

    /// Leaves `db.table` out as well.
    pub fn exclude_table(&mut self, qualified: String) {
        self.extra_excluded.push(qualified);
    }

    /// The tables left out by [`TableFilter::exclude_table`], as `db.table`.
    pub fn left_out(&self) -> &[String] {
        &self.extra_excluded
    }

    pub fn is_system_database(db: &str) -> bool {
        SYSTEM_DATABASES.iter().any(|s| s.eq_ignore_ascii_case(db))
    }

    /// Whether rows of `db.table` are captured.
    pub fn captures(&self, db: &str, table: &str) -> bool {
        if Self::is_system_database(db) {
            return false;
        }
        let q = format!("{db}.{table}");
        self.include.iter().any(|p| p.matches(&q))
            && !self.exclude.iter().any(|p| p.matches(&q))
            && !self.extra_excluded.contains(&q)
    }

    /// Whether statement `sql`, run with `default_db` as the session's database, is a schema
    /// change the producer writes: DDL on a captured table or database. `Err(why)` when it is
    /// no statement the pipeline replicates (users, grants, views, routines, ...).
    pub fn captures_ddl(&self, sql: &str, default_db: &str) -> Result<bool, &'static str> {
        match classify(sql) {
            DdlTarget::Tables(ts) => Ok(ts
                .iter()
                .any(|(db, t)| self.captures(db.as_deref().unwrap_or(default_db), t))),
            DdlTarget::Database(db) => Ok(self.captures_database(&db)),
            DdlTarget::NotReplicated(why) => Err(why),
        }
    }

    /// Whether anything in database `db` may be captured (for database-level DDL).
    pub fn captures_database(&self, db: &str) -> bool {
        if Self::is_system_database(db) {
            return false;
        }
        // A table name that matches any '*'-suffixed include of this database.
        let probe = format!("{db}.\u{1}");
        self.include
            .iter()
            .any(|p| p.matches(&probe) || p.as_str().starts_with(&format!("{db}.")))
            // ... unless an exclude leaves out the whole database (`db.*`, `drill_*.*`).
            && !self.exclude.iter().any(|p| p.matches(&probe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> TableFilter {
        let cfg = ProducerConfig {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        TableFilter::new(&cfg).unwrap()
    }

    #[test]
    fn default_captures_every_non_system_table() {
        let t = f(&["*.*"], &[]);
        assert!(t.captures("shop", "orders"));
        assert!(!t.captures("mysql", "user"));
        assert!(!t.captures("continuum", "checkpoint"));
        assert!(t.captures_database("shop"));
        assert!(!t.captures_database("sys"));
    }

    #[test]
    fn a_database_excluded_whole_is_not_captured_even_by_its_ddl() {
        let t = f(&["*.*"], &["drill_*.*", "shop.tmp_*"]);
        assert!(!t.captures_database("drill_1_0"));
        assert!(!t.captures("drill_1_0", "accounts"));
        assert_eq!(
            t.captures_ddl("CREATE DATABASE IF NOT EXISTS drill_1_0", ""),
            Ok(false)
        );
        assert_eq!(t.captures_ddl("DROP DATABASE drill_1_0", ""), Ok(false));
        assert!(
            t.captures_database("shop"),
            "a table-level exclude leaves the database"
        );
    }

    #[test]
    fn include_then_exclude() {
        let t = f(&["shop.*", "crm.customers"], &["shop.tmp_*"]);
        assert!(t.captures("shop", "orders"));
        assert!(!t.captures("shop", "tmp_x"));
        assert!(t.captures("crm", "customers"));
        assert!(!t.captures("crm", "leads"));
        assert!(t.captures_database("crm"));
        assert!(!t.captures_database("hr"));
    }

    #[test]
    fn ddl_is_captured_when_it_touches_a_captured_table_or_database() {
        let t = f(&["shop.*"], &["shop.tmp_*"]);
        assert_eq!(
            t.captures_ddl("ALTER TABLE orders ADD c INT", "shop"),
            Ok(true)
        );
        assert_eq!(
            t.captures_ddl("ALTER TABLE orders ADD c INT", "crm"),
            Ok(false)
        );
        assert_eq!(t.captures_ddl("DROP TABLE shop.tmp_1", "crm"), Ok(false));
        assert_eq!(
            t.captures_ddl("RENAME TABLE shop.tmp_1 TO shop.keep", "x"),
            Ok(true)
        );
        assert_eq!(t.captures_ddl("CREATE DATABASE shop", "x"), Ok(true));
        assert!(t
            .captures_ddl("GRANT SELECT ON shop.* TO u", "shop")
            .is_err());
        assert!(t
            .captures_ddl("CREATE USER u IDENTIFIED BY 'x'", "shop")
            .is_err());
    }

    #[test]
    fn patterns_need_a_dot() {
        let cfg = ProducerConfig {
            include: vec!["shop".into()],
            ..Default::default()
        };
        let e = TableFilter::new(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("producer.include") && e.contains("db.table"),
            "{e}"
        );
    }
}
