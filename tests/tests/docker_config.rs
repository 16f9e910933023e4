//! `docker/` holds together, checked without a Docker engine (this machine cannot run one):
//!
//! - `docker/config/{sf,eu}.toml` parse and validate as `SiteConfig`, name the same clusters,
//!   point at the compose services, and serve `/metrics` and `/health` on all interfaces;
//! - the MariaDB settings in `docker/mariadb/*.cnf` are the local stack's, with distinct server
//!   and domain ids, none equal to a producer's replica `server_id`;
//! - `docker/compose.yml` references only files that exist (or, for secrets, that
//!   `docker/make-secrets.sh` writes), has the four services of each site with health checks
//!   and each MariaDB in its role, pins its images, and joins each service to the networks of
//!   the site model; each site's operator container reaches both databases with both passwords;
//! - `docker/Dockerfile` copies every workspace member and stubs every target its dependency
//!   layer needs.
//!
//! The compose file is read as text (this crate has no YAML parser): the checks rely on the
//! layout of `docker/compose.yml` (two-space indents, flow lists for `networks`). Its YAML and
//! its schema are validated separately (docs/deployment.md, "What was validated").
//!
//! Needs no stack: `cargo test -p continuum-tests --test docker_config`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use continuum_common::config::SiteConfig;
use continuum_tests::workspace_root;

const SITES: [&str; 2] = ["sf", "eu"];

fn docker_dir() -> PathBuf {
    workspace_root().join("docker")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn site_config(site: &str) -> SiteConfig {
    let p = docker_dir().join("config").join(format!("{site}.toml"));
    let c = SiteConfig::from_file(&p).unwrap_or_else(|e| panic!("{e}"));
    c.validate()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    c
}

fn compose() -> String {
    read(&docker_dir().join("compose.yml"))
}

/// Indentation of a line, or `None` for blank and comment-only lines.
fn indent(line: &str) -> Option<usize> {
    let t = line.trim_start();
    (!t.is_empty() && !t.starts_with('#')).then(|| line.len() - t.len())
}

/// The blocks of YAML keys at `indent` under the top-level key `parent` (`services`), or at
/// the top level itself when `parent` is empty: key -> the block's text (key line included,
/// comments and blank lines left out).
fn blocks(yaml: &str, parent: &str, depth: usize) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = parent.is_empty();
    let mut current: Option<(String, String)> = None;
    for line in yaml.lines() {
        // Comments are left out: a block is what compose reads.
        let Some(ind) = indent(line) else { continue };
        if !parent.is_empty() && ind == 0 {
            inside = line.trim_end() == format!("{parent}:");
            if let Some((k, b)) = current.take() {
                out.insert(k, b);
            }
            continue;
        }
        if !inside {
            continue;
        }
        if ind == depth {
            if let Some((k, b)) = current.take() {
                out.insert(k, b);
            }
            let key = line.trim().split(':').next().unwrap().to_owned();
            current = Some((key, format!("{line}\n")));
        } else if ind > depth {
            if let Some((_, b)) = current.as_mut() {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    if let Some((k, b)) = current.take() {
        out.insert(k, b);
    }
    out
}

fn services() -> BTreeMap<String, String> {
    blocks(&compose(), "services", 2)
}

/// A service's block with the anchors it merges (`<<: *name`) appended.
fn service_with_anchors(name: &str) -> String {
    let text = compose();
    let top = blocks(&text, "", 0);
    let svc = services()
        .remove(name)
        .unwrap_or_else(|| panic!("compose.yml has no service {name}"));
    let mut all = svc.clone();
    for line in svc.lines() {
        if let Some(anchor) = line.trim().strip_prefix("<<: *") {
            let def = top
                .values()
                .find(|b| {
                    b.lines()
                        .next()
                        .is_some_and(|l| l.ends_with(&format!("&{anchor}")))
                })
                .unwrap_or_else(|| {
                    panic!("service {name} merges *{anchor}, which compose.yml does not define")
                });
            all.push_str(def);
        }
    }
    all
}

/// The value of `key` in a service block, e.g. `networks: [sf, intersite]` -> {sf, intersite}.
fn flow_list(block: &str, key: &str) -> BTreeSet<String> {
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}: [")))
        .unwrap_or_else(|| panic!("no `{key}: [..]` in:\n{block}"));
    let inner = line.split('[').nth(1).unwrap().split(']').next().unwrap();
    inner
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn cnf(site: &str) -> BTreeMap<String, String> {
    read(&docker_dir().join("mariadb").join(format!("{site}.cnf")))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().replace('-', "_"), v.trim().to_owned()),
            None => (l.replace('-', "_"), String::new()),
        })
        .collect()
}

#[test]
fn site_configs_parse_and_name_both_sites() {
    for site in SITES {
        let c = site_config(site);
        assert_eq!(c.site, site, "docker/config/{site}.toml: site");
        let names: BTreeSet<&str> = c.sites.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            BTreeSet::from(SITES),
            "docker/config/{site}.toml: [sites.*]"
        );
        let other = SITES.iter().find(|s| **s != site).unwrap();
        assert_eq!(c.other_site("test").unwrap(), *other);
    }
}

#[test]
fn both_site_files_describe_the_same_clusters_and_topics() {
    let (sf, eu) = (site_config("sf"), site_config("eu"));
    for site in SITES {
        let (a, b) = (&sf.sites[site], &eu.sites[site]);
        assert_eq!(
            a.brokers, b.brokers,
            "sites.{site}.brokers differs between sf.toml and eu.toml"
        );
        assert_eq!(
            a.registry.url, b.registry.url,
            "sites.{site}.registry.url differs"
        );
        assert_eq!(
            sf.topic_of(site).unwrap(),
            eu.topic_of(site).unwrap(),
            "topic of {site} differs"
        );
        assert_eq!(sf.topic_of(site).unwrap(), format!("{site}.cdc"));
    }
}

#[test]
fn endpoints_are_the_compose_services() {
    let svc = services();
    for site in SITES {
        let c = site_config(site);
        assert_eq!(c.database.host, format!("{site}-db"));
        assert_eq!(c.database.port, 3306);
        assert_eq!(
            c.database.user, "continuum",
            "the user docker/mariadb/init-continuum-user.sh creates"
        );
        assert!(
            c.database.password.is_none(),
            "{site}.toml: no inline password; use the secret file"
        );
        assert_eq!(
            c.database.password_file.as_deref(),
            Some(Path::new("/run/secrets/db-password"))
        );
        for s in SITES {
            assert_eq!(c.sites[s].brokers, format!("{s}-redpanda:9092"));
            assert_eq!(c.sites[s].registry.url, format!("http://{s}-redpanda:8081"));
            // The other site's MariaDB, for the operator verbs, under the name the
            // <site>-operator service mounts its password with.
            let remote = c.sites[s].database.as_ref();
            if s == site {
                assert!(
                    remote.is_none(),
                    "{site}.toml: this site's database is [database]"
                );
                continue;
            }
            let remote = remote.unwrap_or_else(|| {
                panic!("{site}.toml: no [sites.{s}.database] for promote, orphans and verify")
            });
            let own = c.database_of(s).unwrap();
            assert_eq!(own.host, remote.host);
            assert_eq!(remote.host, format!("{s}-db"));
            assert_eq!(remote.port, 3306);
            assert_eq!(remote.user, "continuum");
            assert!(remote.password.is_none(), "{site}.toml: no inline password");
            let file = format!("/run/secrets/{s}-db-password");
            assert_eq!(remote.password_file.as_deref(), Some(Path::new(&file)));
        }
        for host in [format!("{site}-db"), format!("{site}-redpanda")] {
            assert!(
                svc.contains_key(&host),
                "{site}.toml names {host}, which is not a compose service"
            );
        }
        // The advertised Kafka address is the one the configs use.
        let rp = &svc[&format!("{site}-redpanda")];
        assert!(
            rp.contains(&format!(
                "--advertise-kafka-addr=internal://{site}-redpanda:9092"
            )),
            "{rp}"
        );
        assert!(
            rp.contains("--schema-registry-addr=internal://0.0.0.0:8081"),
            "{rp}"
        );
    }
}

#[test]
fn metrics_listen_on_all_interfaces_at_the_ports_the_image_checks() {
    let dockerfile = read(&docker_dir().join("Dockerfile"));
    let healthcheck = read(&docker_dir().join("healthcheck.sh"));
    assert!(dockerfile.contains("EXPOSE 9101 9102"));
    for site in SITES {
        let c = site_config(site);
        for (what, addr, port) in [
            ("producer", c.producer.metrics_listen, 9101),
            ("consumer", c.consumer.metrics_listen, 9102),
        ] {
            assert!(
                addr.ip().is_unspecified(),
                "{site}.toml {what}.metrics_listen is {addr}: a container must listen on 0.0.0.0"
            );
            assert_eq!(
                addr.port(),
                port,
                "{site}.toml {what}.metrics_listen: the health check asks port {port}"
            );
            assert!(
                healthcheck.contains(&format!("127.0.0.1:{port}")),
                "healthcheck.sh does not default to port {port}"
            );
        }
    }
}

#[test]
fn mariadb_settings_match_the_local_stack_and_ids_are_unique() {
    let stack = read(&workspace_root().join("scripts/stack.sh"));
    let mut server_ids = BTreeSet::new();
    let mut domains = BTreeSet::new();
    for site in SITES {
        let m = cnf(site);
        for (k, v) in [
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
            ("gtid_strict_mode", "ON"),
            ("sync_binlog", "1"),
            ("innodb_flush_log_at_trx_commit", "1"),
            ("log_slave_updates", "ON"),
            ("log_bin", &format!("{site}-bin")),
        ] {
            assert_eq!(
                m.get(k).map(String::as_str),
                Some(v),
                "docker/mariadb/{site}.cnf: {k}"
            );
        }
        // The settings the pipeline and its data depend on have the local stack's values (its
        // file-system, network and TLS lines are the stack's own business).
        let stack_settings: BTreeMap<String, String> = stack
            .lines()
            .skip_while(|l| *l != "[mariadbd]")
            .skip(1)
            .take_while(|l| *l != "EOF")
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().replace('-', "_"), v.trim().to_owned()))
            .collect();
        for key in [
            "log_slave_updates",
            "binlog_format",
            "binlog_row_image",
            "binlog_row_metadata",
            "gtid_strict_mode",
            "character_set_server",
            "collation_server",
            "max_allowed_packet",
        ] {
            let want = stack_settings.get(key).unwrap_or_else(|| {
                panic!("scripts/stack.sh no longer sets {key}: update this test")
            });
            assert_eq!(
                m.get(key),
                Some(want),
                "docker/mariadb/{site}.cnf: {key} differs from scripts/stack.sh"
            );
        }
        assert!(
            !m.contains_key("read_only"),
            "{site}.cnf: read_only comes from the role (start.sh), not from the file"
        );
        server_ids.insert(m["server_id"].clone());
        domains.insert(m["gtid_domain_id"].clone());
        let producer_id = site_config(site).producer.server_id.to_string();
        assert!(
            !server_ids.contains(&producer_id),
            "producer server_id {producer_id} equals a MariaDB server_id"
        );
        server_ids.insert(producer_id);
    }
    assert_eq!(
        server_ids.len(),
        4,
        "server ids must all differ: {server_ids:?}"
    );
    assert_eq!(
        domains.len(),
        2,
        "gtid_domain_id must differ between sites: {domains:?}"
    );
}

#[test]
fn compose_references_only_files_that_exist_or_that_make_secrets_writes() {
    let dir = docker_dir();
    let text = compose();
    let make_secrets = read(&dir.join("make-secrets.sh"));
    let mut seen = 0;
    for line in text.lines().filter(|l| indent(l).is_some()) {
        let t = line.trim();
        // `- ./host/path:/container/path[:ro]` and `file: ./path`
        let path = t
            .strip_prefix("- ./")
            .map(|r| r.split(':').next().unwrap())
            .or_else(|| t.strip_prefix("file: ./"));
        let Some(path) = path else { continue };
        seen += 1;
        if let Some(name) = path.strip_prefix("secrets/") {
            assert!(
                make_secrets.contains(name),
                "secret file {path} is not written by docker/make-secrets.sh"
            );
            continue;
        }
        assert!(
            dir.join(path).is_file(),
            "compose.yml names ./{path}, which does not exist in docker/"
        );
    }
    assert!(
        seen >= 12,
        "expected the config, MariaDB and secret files, found {seen} references"
    );
    assert!(text.contains("context: ..") && text.contains("dockerfile: docker/Dockerfile"));
    assert!(dir.join("Dockerfile").is_file());
    let ignore = read(&dir.join("secrets/.gitignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        "docker/secrets/ must be ignored by git"
    );
    // The configs are mounted where the image looks for them.
    for site in SITES {
        for role in ["producer", "consumer"] {
            let s = service_with_anchors(&format!("{site}-{role}"));
            assert!(
                s.contains(&format!(
                    "- ./config/{site}.toml:/etc/continuum/continuum.toml:ro"
                )),
                "{s}"
            );
            assert!(
                s.contains("CONTINUUM_CONFIG: /etc/continuum/continuum.toml"),
                "{s}"
            );
        }
    }
}

#[test]
fn compose_has_both_sites_with_health_checks_on_their_networks() {
    let svc = services();
    for site in SITES {
        let expected = [
            ("db", vec![site]),
            ("redpanda", vec![site, "intersite"]),
            ("producer", vec![site]),
            ("consumer", vec![site, "intersite"]),
        ];
        for (role, nets) in expected {
            let name = format!("{site}-{role}");
            assert!(svc.contains_key(&name), "compose.yml has no service {name}");
            let s = service_with_anchors(&name);
            assert!(
                s.contains("healthcheck:") && s.contains("test:"),
                "{name} has no health check"
            );
            assert!(
                !s.contains("disable: true"),
                "{name} disables its health check"
            );
            let want: BTreeSet<String> = nets.iter().map(|n| n.to_string()).collect();
            assert_eq!(flow_list(&svc[&name], "networks"), want, "{name}: networks");
        }
        // Producers and consumers wait for their own site's database and broker to be healthy,
        // and never for the other site's (it may be the one that is down).
        let other = SITES.iter().find(|s| **s != site).unwrap();
        for role in ["producer", "consumer"] {
            let s = &svc[&format!("{site}-{role}")];
            for dep in [format!("{site}-db:"), format!("{site}-redpanda:")] {
                assert!(s.contains(&dep), "{site}-{role} does not depend on {dep}");
            }
            assert!(s.matches("condition: service_healthy").count() >= 2, "{s}");
            assert!(
                !s.contains(&format!("{other}-")),
                "{site}-{role} refers to the other site:\n{s}"
            );
        }
        let c = &svc[&format!("{site}-consumer")];
        assert!(
            c.contains(r#"command: ["continuum-consumer", "run"]"#),
            "{c}"
        );
        let p = &svc[&format!("{site}-producer")];
        assert!(p.contains(r#"command: ["continuum-producer"]"#), "{p}");
    }
    // The operators reach both sites, with their own site's password as the config expects
    // it and the other site's under the name its [sites.<other>.database] gives.
    for site in SITES {
        let other = SITES.iter().find(|s| **s != site).unwrap();
        let name = format!("{site}-operator");
        let o = svc
            .get(&name)
            .unwrap_or_else(|| panic!("compose.yml has no service {name}"));
        assert_eq!(
            flow_list(o, "networks"),
            BTreeSet::from(["sf", "eu", "intersite"].map(String::from)),
            "{name}: networks"
        );
        assert!(o.contains("profiles: [operator]"), "{o}");
        assert!(
            o.contains(&format!(
                "- source: {site}-db-password\n        target: db-password\n"
            )),
            "{o}"
        );
        assert!(o.contains(&format!("- {other}-db-password\n")), "{o}");
        assert!(
            o.contains(&format!(
                "- ./config/{site}.toml:/etc/continuum/continuum.toml:ro"
            )),
            "{o}"
        );
    }
    // Each MariaDB starts in its role: SF the primary, EU the replica (read_only=ON).
    for (site, role) in [("sf", "primary"), ("eu", "replica")] {
        let db = service_with_anchors(&format!("{site}-db"));
        assert!(db.contains(&format!("CONTINUUM_DB_ROLE: {role}\n")), "{db}");
        assert!(
            db.contains(r#"command: ["bash", "/usr/local/bin/continuum-db-start"]"#),
            "{db}"
        );
        assert!(
            db.contains("- ./mariadb/start.sh:/usr/local/bin/continuum-db-start:ro"),
            "{db}"
        );
    }
    let top = blocks(&compose(), "networks", 2);
    assert_eq!(
        top.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["sf", "eu", "intersite"])
    );
}

#[test]
fn compose_images_are_pinned() {
    let text = compose();
    let images: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert!(images.len() >= 3, "{images:?}");
    for image in images {
        if image == "continuum:dev" {
            continue; // built from this repository by docker/Dockerfile
        }
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("image {image} has no tag"));
        assert!(
            tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()) && tag.contains('.'),
            "image {image} is not pinned to a version"
        );
    }
}

#[test]
fn dockerfile_copies_every_workspace_member_and_stubs_its_targets() {
    let root = workspace_root();
    let dockerfile = read(&root.join("docker/Dockerfile"));
    let dockerignore = read(&root.join("docker/Dockerfile.dockerignore"));
    let manifest = read(&root.join("Cargo.toml"));
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    let members: Vec<String> = members_line
        .split('[')
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.len() >= 4, "{members:?}");
    // The dependency layer finds the targets to stub in the manifests themselves.
    assert!(dockerfile.contains("for manifest in */Cargo.toml; do"));
    assert!(dockerfile.contains(r#"for target in src/lib.rs src/main.rs $(sed -n 's/^path *= *"\(.*\)" *$/\1/p' "$manifest")"#));
    for m in &members {
        assert!(
            !m.contains('/'),
            "member {m}: the Dockerfile's */Cargo.toml only finds top-level members"
        );
        assert!(
            dockerfile.contains(&format!("COPY {m}/Cargo.toml {m}/")),
            "Dockerfile does not copy {m}/Cargo.toml"
        );
        assert!(
            dockerfile.contains(&format!("COPY {m} {m}\n")),
            "Dockerfile does not copy {m}/"
        );
        // The build context filter ignores everything it does not name.
        assert!(
            dockerignore.lines().any(|l| l.trim() == format!("!{m}/")),
            "docker/Dockerfile.dockerignore does not let {m}/ into the build context"
        );
        // A target path the sed above cannot see would be missing when cargo loads the
        // workspace: each `path` key of a target section must be `path = "..."` at the start
        // of its line (dependency paths sit in inline tables, never at the start of a line).
        let member_manifest = read(&root.join(m).join("Cargo.toml"));
        for line in member_manifest
            .lines()
            .filter(|l| l.trim_start().starts_with("path"))
        {
            let rest = line
                .strip_prefix("path")
                .and_then(|r| r.trim_start().strip_prefix('='));
            let ok = rest.is_some_and(|r| {
                let r = r.trim();
                r.len() > 2 && r.starts_with('"') && r.ends_with('"')
            });
            assert!(ok, "{m}/Cargo.toml: `{line}`: write target paths as path = \"...\" at the start of the line (docker/Dockerfile stubs them)");
        }
    }
}
