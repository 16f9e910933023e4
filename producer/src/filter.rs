//! Which tables are captured: `producer.include` and `producer.exclude` glob patterns on
//! `db.table` (`*` matches any run of characters, including dots), minus the system databases
//! and Continuum's own `continuum` schema, which are never captured.

use glob::Pattern;

use continuum_common::config::ProducerConfig;
use continuum_common::ConfigError;

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
