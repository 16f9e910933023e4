//! MariaDB connection options from [`DatabaseConfig`]: TCP, credentials, and TLS with CA and
//! hostname verification; the 1 GiB packet limit of connections that read as a replica
//! ([`replica_opts`]); which MariaDB errors are worth retrying.

use continuum_schemas::KeyPart;
use mysql_async::{Opts, OptsBuilder, SslOpts, Value as MyValue};

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

/// A key column's value as the source returned it, kept exactly ([`KeyPart`]).
pub fn key_part(v: &MyValue) -> KeyPart {
    match v {
        MyValue::NULL => KeyPart::Null,
        MyValue::Int(i) => KeyPart::Int(*i),
        MyValue::UInt(u) => KeyPart::Uint(*u),
        MyValue::Float(f) => KeyPart::Float(*f),
        MyValue::Double(d) => KeyPart::Double(*d),
        MyValue::Bytes(b) => KeyPart::Bytes(b.iter().map(|x| format!("{x:02x}")).collect()),
        MyValue::Date(y, mo, d, h, mi, s, us) => KeyPart::Date([
            u32::from(*y),
            u32::from(*mo),
            u32::from(*d),
            u32::from(*h),
            u32::from(*mi),
            u32::from(*s),
            *us,
        ]),
        MyValue::Time(neg, d, h, mi, s, us) => KeyPart::Time(
            *neg,
            [*d, u32::from(*h), u32::from(*mi), u32::from(*s), *us],
        ),
    }
}

/// A [`KeyPart`] back as the value to bind; an error says what does not read back.
pub fn key_value(part: &KeyPart) -> Result<MyValue, String> {
    let narrow = |v: u32, what: &str| -> Result<u8, String> {
        u8::try_from(v).map_err(|_| format!("{what} {v} out of range"))
    };
    Ok(match part {
        KeyPart::Null => MyValue::NULL,
        KeyPart::Int(i) => MyValue::Int(*i),
        KeyPart::Uint(u) => MyValue::UInt(*u),
        KeyPart::Float(f) => MyValue::Float(*f),
        KeyPart::Double(d) => MyValue::Double(*d),
        KeyPart::Bytes(hex) => {
            if hex.len() % 2 != 0 {
                return Err(format!("odd-length hex '{hex}'"));
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| format!("hex '{hex}': {e}"))?;
            MyValue::Bytes(bytes)
        }
        KeyPart::Date([y, mo, d, h, mi, s, us]) => MyValue::Date(
            u16::try_from(*y).map_err(|_| format!("year {y} out of range"))?,
            narrow(*mo, "month")?,
            narrow(*d, "day")?,
            narrow(*h, "hour")?,
            narrow(*mi, "minute")?,
            narrow(*s, "second")?,
            *us,
        ),
        KeyPart::Time(neg, [d, h, mi, s, us]) => MyValue::Time(
            *neg,
            *d,
            narrow(*h, "hours")?,
            narrow(*mi, "minutes")?,
            narrow(*s, "seconds")?,
            *us,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_keep_every_value_kind_exactly() {
        for v in [
            MyValue::NULL,
            MyValue::Int(-5),
            MyValue::UInt(u64::MAX),
            MyValue::Float(1.5),
            MyValue::Double(-2.25),
            MyValue::Bytes(vec![0, 0xff, b'a', 0x7f]),
            MyValue::Bytes(Vec::new()),
            MyValue::Date(2026, 12, 6, 23, 59, 58, 999_999),
            MyValue::Time(true, 34, 22, 59, 1, 5),
        ] {
            let part = key_part(&v);
            let text = serde_json::to_string(&part).unwrap();
            let back: KeyPart = serde_json::from_str(&text).unwrap();
            assert_eq!(key_value(&back).unwrap(), v, "{text}");
        }
        assert!(key_value(&KeyPart::Bytes("abc".into())).is_err());
        assert!(key_value(&KeyPart::Bytes("zz".into())).is_err());
        assert!(key_value(&KeyPart::Date([2026, 300, 1, 0, 0, 0, 0])).is_err());
    }

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
