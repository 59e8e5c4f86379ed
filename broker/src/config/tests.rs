use super::*;

#[test]
fn defaults_validate_and_errors_name_the_key() {
    let c = Config::default().validate().unwrap();
    assert!(c.shards >= 1);
    let e = Config {
        recv_buffer_count: 1000,
        ..Config::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.key, "recv_buffer_count");
    let e = Config {
        packet_bytes_max: 1,
        ..Config::default()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("packet_bytes_max"));
}

#[test]
fn toml_rejects_unknown_keys() {
    let c: Config = toml::from_str("listen = \"127.0.0.1:1999\"\nshards = 2").unwrap();
    assert_eq!((c.listen.port(), c.shards), (1999, 2));
    assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
}

#[test]
fn toml_sets_optional_keys() {
    let c: Config = toml::from_str(
        "password_file = \"/etc/ringmq/passwd\"\nmetrics_listen = \"127.0.0.1:9883\"\n\
         durability = \"batch\"\nallow_anonymous = false",
    )
    .unwrap();
    assert_eq!(c.password_file, Some(PathBuf::from("/etc/ringmq/passwd")));
    assert_eq!(
        c.metrics_listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9883)))
    );
    assert_eq!(c.acl_file, None);
    assert_eq!(c.durability, Durability::Batch);
    assert!(!c.allow_anonymous);
}

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    flags: ConfigFlags,
}

#[test]
fn flags_override_only_the_keys_given() {
    use clap::{CommandFactory, Parser};
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "ringmq",
        "--listen",
        "0.0.0.0:1999",
        "--allow-anonymous",
        "false",
        "--password-file",
        "/p",
        "--metrics-listen",
        "127.0.0.1:9883",
        "--durability",
        "memory",
        "--log",
        "debug",
        "--compaction-bytes-per-second",
        "8192",
    ])
    .unwrap();
    let mut c = Config {
        acl_file: Some("/acl".into()),
        shards: 3,
        ..Config::default()
    };
    cli.flags.apply(&mut c);
    let expected = Config {
        listen: SocketAddr::from(([0, 0, 0, 0], 1999)),
        allow_anonymous: false,
        password_file: Some("/p".into()),
        acl_file: Some("/acl".into()),
        metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9883))),
        durability: Durability::Memory,
        log: "debug".into(),
        compaction_bytes_per_second: 8192,
        shards: 3,
        ..Config::default()
    };
    assert_eq!(c, expected);
    // Every key has its flag; a boolean flag needs its value.
    let cmd = Cli::command();
    for key in KEYS {
        let long = key.key.replace('_', "-");
        assert!(
            cmd.get_arguments()
                .any(|a| a.get_long() == Some(long.as_str())),
            "no flag --{long}"
        );
    }
    assert!(Cli::try_parse_from(["ringmq", "--allow-anonymous"]).is_err());
    assert!(Cli::try_parse_from(["ringmq", "--no-such-key", "1"]).is_err());
}

/// The cells of a README table row "| `key` | default | meaning |".
fn row_cells(line: &str) -> Option<(&str, &str, &str)> {
    let mut cells = line
        .strip_prefix("| ")?
        .strip_suffix(" |")?
        .splitn(3, " | ");
    let key = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
    Some((key, cells.next()?, cells.next()?))
}

#[test]
fn readme_table_matches_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let section = readme
        .split_once("\n### Configuration\n")
        .unwrap_or_else(|| panic!("{path}: no \"### Configuration\" section"))
        .1;
    // Up to the next heading.
    let section = section.split("\n#").next().unwrap_or(section);
    let table: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(
        table.len() >= 2
            && table[0] == "| key | default | meaning |"
            && table[1].starts_with("|---"),
        "{path}: the Configuration table should start with \"| key | default | meaning |\" \
         and a separator row, found {:?}",
        table.get(..2)
    );
    let readme_rows: Vec<(&str, &str, &str)> = table[2..]
        .iter()
        .map(|&line| {
            row_cells(line).unwrap_or_else(|| {
                panic!(
                    "{path}: malformed Configuration row (want \"| `key` | default | \
                     meaning |\"): {line}"
                )
            })
        })
        .collect();
    let keys: Vec<(&str, &str, &str)> =
        KEYS.iter().map(|k| (k.key, k.default, k.meaning)).collect();
    if readme_rows == keys {
        return;
    }
    // Report by key, so that one missing row does not make every later row differ.
    let mut diff = String::new();
    for k in &keys {
        match readme_rows.iter().find(|r| r.0 == k.0) {
            None => diff += &format!("`{}`: missing from the README\n", k.0),
            Some(r) => {
                for (column, readme, expected) in [("default", r.1, k.1), ("meaning", r.2, k.2)] {
                    if readme != expected {
                        diff += &format!(
                            "`{}` {column}:\n  README: {readme:?}\n  KEYS:   {expected:?}\n",
                            k.0
                        );
                    }
                }
            }
        }
    }
    for r in &readme_rows {
        if !keys.iter().any(|k| k.0 == r.0) {
            diff += &format!("`{}`: in the README, not a key\n", r.0);
        }
    }
    if diff.is_empty() {
        let readme_order: Vec<&str> = readme_rows.iter().map(|r| r.0).collect();
        let keys_order: Vec<&str> = keys.iter().map(|k| k.0).collect();
        diff = format!("order:\n  README: {readme_order:?}\n  KEYS:   {keys_order:?}\n");
    }
    let expected: Vec<String> = keys
        .iter()
        .map(|(key, default, meaning)| format!("| `{key}` | {default} | {meaning} |"))
        .collect();
    panic!(
        "{path}: the Configuration table differs from config::KEYS \
         (the `config_keys!` list in broker/src/config.rs):\n{diff}\n\
         The table KEYS expects:\n| key | default | meaning |\n|---|---|---|\n{}\n",
        expected.join("\n")
    );
}
