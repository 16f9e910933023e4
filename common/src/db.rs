//! MariaDB connection options from [`DatabaseConfig`]: TCP, credentials, and TLS with CA and
//! hostname verification; the 1 GiB packet limit of connections that read as a replica
//! ([`replica_opts`]); which MariaDB errors are worth retrying.

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

/// The packet limit of a connection that reads the binlog: 1 GiB, MariaDB's largest
/// `max_allowed_packet`, as a native replica reads with (`slave_max_allowed_packet`). The
/// server sends binlog events of any size up to that to a replica, whatever its own
/// `max_allowed_packet` (16 MiB by default), which is what `mysql_async` would otherwise take.
pub const BINLOG_MAX_PACKET: usize = 1 << 30;

/// `opts` for a connection that reads what a replica reads (a binlog stream, the snapshot's
/// rows): the packet limit is [`BINLOG_MAX_PACKET`]. A row of a table may be larger than the
/// source's `max_allowed_packet` too (written while the setting was higher), and the server
/// sends it.
pub fn replica_opts(opts: &Opts) -> Opts {
    OptsBuilder::from_opts(opts.clone())
        .max_allowed_packet(Some(BINLOG_MAX_PACKET))
        .into()
}

/// Whether `e` is a packet larger than the connection's limit (`max_allowed_packet`). Never
/// transient: the same packet comes again.
pub fn is_packet_too_large(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Driver(mysql_async::DriverError::PacketTooLarge) => true,
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io
            .get_ref()
            .and_then(|inner| {
                inner.downcast_ref::<mysql_common::proto::codec::error::PacketCodecError>()
            })
            .is_some_and(|c| {
                matches!(
                    c,
                    mysql_common::proto::codec::error::PacketCodecError::PacketTooLarge
                )
            }),
        _ => false,
    }
}

/// The error `mysql_async` returns when a packet exceeds the connection's limit, as its codec
/// reports it (for tests of error handling).
pub fn packet_too_large_error() -> mysql_async::Error {
    mysql_common::proto::codec::error::PacketCodecError::PacketTooLarge.into()
}

/// `host:port` for messages.
pub fn describe(db: &DatabaseConfig) -> String {
    format!("{}@{}:{}", db.user, db.host, db.port)
}

/// MariaDB error codes that are worth retrying: deadlock, lock wait timeout, and the
/// server going away. A packet over the connection's limit is not: it comes again.
pub fn is_transient(e: &mysql_async::Error) -> bool {
    if is_packet_too_large(e) {
        return false;
    }
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

    fn packet_too_large() -> mysql_async::Error {
        packet_too_large_error()
    }

    #[test]
    fn a_packet_over_the_limit_is_fatal_and_other_io_errors_are_not() {
        assert!(is_packet_too_large(&packet_too_large()));
        assert!(
            !is_transient(&packet_too_large()),
            "the same packet comes again"
        );
        let reset: mysql_async::Error =
            std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert!(!is_packet_too_large(&reset));
        assert!(is_transient(&reset), "a dropped connection is retried");
    }

    #[test]
    fn binlog_connections_take_packets_up_to_one_gib() {
        let opts: Opts = OptsBuilder::default().into();
        assert_eq!(
            opts.max_allowed_packet(),
            None,
            "mysql_async would read the server's"
        );
        assert_eq!(replica_opts(&opts).max_allowed_packet(), Some(1 << 30));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a"), "`a`");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }
}
