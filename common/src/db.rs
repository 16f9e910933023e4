//! MariaDB connection options from [`DatabaseConfig`]: TCP, credentials, and TLS with CA and
//! hostname verification.

use mysql_async::{Opts, OptsBuilder, SslOpts};

use crate::config::{ConfigError, DatabaseConfig};

/// Connection options for `db`. `init` statements run on every new connection.
pub fn opts(db: &DatabaseConfig, init: &[&str]) -> Result<Opts, ConfigError> {
    let password = db.password()?;
    let mut b = OptsBuilder::default()
        .ip_or_hostname(db.host.clone())
        .tcp_port(db.port)
        .user(Some(db.user.clone()))
        .pass(password.map(|p| p.expose().to_owned()))
        .prefer_socket(false)
        .init(init.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .stmt_cache_size(256);
    if let Some(t) = &db.tls {
        if !t.ca_file.exists() {
            return Err(ConfigError::Invalid {
                setting: "database.tls.ca_file".into(),
                reason: format!("{} does not exist", t.ca_file.display()),
            });
        }
        b = b.ssl_opts(Some(ssl_opts(t)));
    }
    Ok(b.into())
}

/// TLS options for `t`: only the configured CA is trusted, since the system's public roots
/// would also vouch for any certificate a public CA issued for this host name.
pub fn ssl_opts(t: &crate::config::DbTlsConfig) -> SslOpts {
    SslOpts::default()
        .with_root_certs(vec![t.ca_file.clone().into()])
        .with_disable_built_in_roots(true)
        .with_danger_skip_domain_validation(!t.verify_hostname)
}

/// `host:port` for messages.
pub fn describe(db: &DatabaseConfig) -> String {
    format!("{}@{}:{}", db.user, db.host, db.port)
}

/// MariaDB error codes that are worth retrying: deadlock, lock wait timeout, and the
/// server going away.
pub fn is_transient(e: &mysql_async::Error) -> bool {
    match e {
        // 1412: a consistent-snapshot read met a table whose definition changed after the snapshot
        // began; retrying takes a new snapshot.
        mysql_async::Error::Server(s) => matches!(
            s.code,
            1205 | 1213 | 1053 | 1927 | 2006 | 2013 | 1040 | 1317 | 1412
        ),
        mysql_async::Error::Io(_)
        | mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => true,
        mysql_async::Error::Driver(mysql_async::DriverError::PoolDisconnected) => false,
        _ => false,
    }
}

/// Quotes an identifier with backticks.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a"), "`a`");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }
}
